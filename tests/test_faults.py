"""Training survives faults: SIGKILL at random moments and Ctrl-C resume to the weights of an
uninterrupted run, no checkpoint is ever unreadable, a crash after a mid-epoch checkpoint
resumes bit for bit, and a NaN loss or gradient stops cleanly or, with `on_nan="skip"`, is
skipped."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaelab import VAE, train
from vaelab.training import TrainingDiverged
from vaelab.training import checkpoint as checkpoint_module
from vaelab.training.callbacks import Callbacks
from vaelab.training.checkpoint import load_checkpoint, load_training_state
from vaelab.training.metrics import read_metrics

TIMING = ("epoch_seconds", "samples_per_second")
# How long a CLI process may take before a test calls it hung: far above the seconds these runs
# take when the machine is idle, so that a loaded machine does not fail the tests; it only stops
# a hung process from blocking the suite forever.
PROCESS_TIMEOUT = 600
CHECKPOINTS = ("last", "best", ".last.old", ".best.old")

# A CLI run long enough (8 epochs x 40 steps, a few seconds of training) for kills to land inside
# it, with a mid-epoch checkpoint every 5 steps so that many land during a checkpoint write.
EPOCHS = 8
CLI_RUN = (
    "--dataset",
    "digits",
    "--epochs",
    str(EPOCHS),
    "--batch-size",
    "32",
    "--checkpoint-every",
    "5",
    "--seed",
    "3",
    "--no-figures",
    "--no-progress",
)


def weights(run_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir, prefer=which)[0].state_dict()


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def assert_finite(state: dict[str, torch.Tensor]) -> None:
    assert [k for k, v in state.items() if not torch.isfinite(v).all()] == []


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def meta(run_dir: Path, which: str = "last") -> dict:
    return json.loads((run_dir / which / "meta.json").read_text())


# --- the command line, killed -------------------------------------------------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python ignores SIGINT if the parent did


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vaelab", "train", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return process.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        process.kill()


def saved_step(run: Path) -> int | None:
    """The step of `last/` on disk, or None while there is none (or it is being replaced)."""
    try:
        return int(meta(run)["step"])
    except (OSError, ValueError, KeyError):
        return None


def wait_for_new_checkpoint(process: subprocess.Popen[str], run: Path, after: int | None) -> None:
    """Until this process has saved a checkpoint beyond step `after` (or has ended)."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while process.poll() is None:
        step = saved_step(run)
        if step is not None and (after is None or step > after):
            return
        assert time.monotonic() < deadline, f"no checkpoint within {PROCESS_TIMEOUT} s"
        time.sleep(0.005)


def temporaries(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if ".tmp-" in p.name)


def assert_every_checkpoint_loads(run: Path) -> list[str]:
    """Each checkpoint folder in the run loads, with finite weights; `last` ones resume."""
    present = [name for name in CHECKPOINTS if (run / name).is_dir()]
    assert any(name in present for name in ("last", ".last.old")), present
    for name in present:
        model, _, saved = load_checkpoint(run / name)
        assert_finite(model.state_dict())
        if "last" in name:
            state = load_training_state(run / name)
            assert state.values["loop"]["step"] == saved["step"]
    return present


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The CLI run of CLI_RUN, uninterrupted."""
    cwd = tmp_path_factory.mktemp("reference")
    _, stderr = finish(process := start(*CLI_RUN, "--out", "run", cwd=cwd))
    assert process.returncode == 0, stderr
    return cwd / "run"


def assert_same_run(run: Path, reference: Path) -> None:
    assert meta(run)["epoch"] == EPOCHS
    assert_identical(weights(run), weights(reference))
    assert_identical(weights(run, "best"), weights(reference, "best"))
    assert without_timing(read_metrics(run)) == without_timing(read_metrics(reference))


def last_meta(run: Path) -> dict:
    """meta.json of the checkpoint a resume would use (`last/`, or `.last.old` after a kill
    between the two renames of a save)."""
    return load_checkpoint(run, prefer="last")[2]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(
    tmp_path, reference_run, digits_x
):
    """Five SIGKILLs at seeded random moments: most a random fraction of the reference run's
    training time after the process saved a new checkpoint (so inside training, often inside
    a checkpoint write), some at a random time after a resume started (import, restore).
    After each kill every checkpoint folder loads; resuming to the end gives the weights,
    best checkpoint and metrics of the uninterrupted run, bit for bit."""
    rng = random.Random(1234)
    kills_planned = 5
    training_seconds = sum(r["epoch_seconds"] for r in read_metrics(reference_run))
    total_steps = EPOCHS * math.ceil(len(digits_x) / 32)
    run = tmp_path / "run"
    resume = ("--resume", str(run), "--no-figures", "--no-progress")
    running: subprocess.Popen[str] | None = start(*CLI_RUN, "--out", str(run), cwd=tmp_path)
    kills: list[dict] = []
    while running is not None and len(kills) < kills_planned:
        step_before = last_meta(run)["step"] if kills else None
        early = bool(kills) and rng.random() < 0.3
        if early:
            time.sleep(rng.uniform(0.2, 2.5))
        else:
            wait_for_new_checkpoint(running, run, after=step_before)
            time.sleep(rng.uniform(0.0, training_seconds / (2 * kills_planned)))
        if running.poll() is not None:
            break  # it finished first
        running.kill()  # SIGKILL: no handler runs, nothing is cleaned up
        finish(running)
        present = assert_every_checkpoint_loads(run)
        step = last_meta(run)["step"]
        kills.append({"early": early, "step_before": step_before, "step": step, "present": present})
        # Killed after the last checkpoint, there is nothing left to resume.
        running = start(*resume, cwd=tmp_path) if step < total_steps else None
    if running is not None:
        _, stderr = finish(running)
        assert running.returncode == 0, stderr
    mid_training = [k for k in kills if not k["early"] and k["step"] < total_steps]
    assert len(mid_training) >= 3, kills
    assert_every_checkpoint_loads(run)
    assert_same_run(run, reference_run)
    # Half-written folders of killed saves are cleared when a run resumes (and a completed save
    # leaves none), so after a final resume nothing is left.
    assert temporaries(run) == [], kills


@pytest.mark.slow
def test_ctrl_c_saves_the_current_step_and_resumes_bit_for_bit(tmp_path, reference_run):
    """Without --checkpoint-every only epoch ends are saved, so a mid-epoch `last/` can only
    come from Ctrl-C; the run resumed from it equals the reference (which saved every 5 steps:
    checkpointing changes nothing either)."""
    run = tmp_path / "run"
    process = start(*CLI_RUN, "--checkpoint-every", "off", "--out", str(run), cwd=tmp_path)
    wait_for_new_checkpoint(process, run, after=None)  # the end of epoch 1; 7 epochs remain
    assert process.poll() is None, "training ended before Ctrl-C"
    process.send_signal(signal.SIGINT)
    _, stderr = finish(process)
    assert process.returncode == 130
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("vaelab: error: interrupted; last/ in ")
    assert f"continue with: vaelab train --resume {run}" in stderr
    saved = meta(run)
    assert saved["batch"] >= 1  # saved at the step it stopped at, inside an epoch
    assert f"step {saved['step']} (batch {saved['batch']} of epoch {saved['epoch'] + 1})" in stderr
    assert_every_checkpoint_loads(run)

    _, stderr = finish(
        process := start("--resume", str(run), "--no-progress", "--no-figures", cwd=tmp_path)
    )
    assert process.returncode == 0, stderr
    assert_same_run(run, reference_run)


# --- crashes in process ---------------------------------------------------------------------------


class CrashAtStep(Callbacks):
    """Raise, as a crash would, before the `call`-th optimisation step of a train() call."""

    def __init__(self, call: int) -> None:
        self.call, self.calls = call, 0

    def on_batch(self, x, *, step):
        self.calls += 1
        if self.calls == self.call:
            raise RuntimeError("simulated crash")


VARIANTS = {
    "vae": {},
    "dae-mask-binarize": {"model": {"model": "dae", "noise": "mask"}, "data": {"binarize": True}},
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    ("crash", "saved"),
    [(7, (0, 4, 4)), (15, (1, 12, 2)), (21, (2, 20, 0))],  # (epoch, step, batch) of last/
    ids=["epoch-1", "epoch-2", "epoch-3-first-step"],
)
def test_crash_after_a_mid_epoch_checkpoint_resumes_bit_for_bit(
    tmp_path, tiny_run, variant, crash, saved
):
    """10 steps per epoch, `last/` every 4 steps: the crash before the given step leaves
    `last/` at the step before the latest multiple of 4 (or the epoch's end)."""
    options = VARIANTS[variant]
    train(tiny_run(epochs=3, **options), tmp_path / "straight", progress=False)
    config = tiny_run(epochs=3, **options).updated({"train": {"checkpoint_every": 4}})
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, tmp_path / "resumed", progress=False, callbacks=CrashAtStep(crash))
    last = meta(tmp_path / "resumed")
    assert (last["epoch"], last["step"], last["batch"]) == saved
    result = train(config, tmp_path / "resumed", resume=True, progress=False)
    assert result.epochs == 3
    assert_identical(weights(tmp_path / "resumed"), weights(tmp_path / "straight"))
    assert_identical(weights(tmp_path / "resumed", "best"), weights(tmp_path / "straight", "best"))
    resumed = without_timing(read_metrics(tmp_path / "resumed"))
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    assert resumed == without_timing(read_metrics(tmp_path / "straight"))


def test_a_crash_in_validation_after_a_checkpoint_at_an_epochs_last_step_resumes(
    tmp_path, tiny_run, monkeypatch
):
    """Step 20 is epoch 2's last: `last/` is saved there mid-epoch (batch 10 of 10), then the
    epoch's validation crashes. Resuming only has to finish that epoch."""
    train(tiny_run(epochs=3), tmp_path / "straight", progress=False)
    config = tiny_run(epochs=3, train={"checkpoint_every": 4})
    original, training_calls = VAE.loss, [0]

    def crash_in_second_validation(self, x, **kwargs):
        if self.training:
            training_calls[0] += 1
        elif training_calls[0] == 20:  # validation after step 20
            raise RuntimeError("simulated crash")
        return original(self, x, **kwargs)

    monkeypatch.setattr(VAE, "loss", crash_in_second_validation)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, tmp_path / "resumed", progress=False)
    monkeypatch.undo()
    last = meta(tmp_path / "resumed")
    assert (last["epoch"], last["step"], last["batch"]) == (1, 20, 10)
    train(config, tmp_path / "resumed", resume=True, progress=False)
    assert_identical(weights(tmp_path / "resumed"), weights(tmp_path / "straight"))
    assert without_timing(read_metrics(tmp_path / "resumed")) == without_timing(
        read_metrics(tmp_path / "straight")
    )


class CrashAfterSave(Callbacks):
    """Raise, as a crash would, right after checkpoint `which` of epoch `epoch` was written."""

    def __init__(self, which: str, epoch: int) -> None:
        self.which, self.epoch = which, epoch

    def on_checkpoint(self, which, path):
        if which == self.which and meta(path.parent, which)["epoch"] == self.epoch:
            raise RuntimeError("simulated crash")


def test_a_crash_between_saving_best_and_last_keeps_the_best_checkpoint(tmp_path, tiny_run):
    """A kill after `best/` of an improving epoch is written but before `last/` is: resuming
    repeats that epoch, and must still leave its weights in `best/` and its metrics logged
    once, as the uninterrupted run does."""
    config = tiny_run(epochs=2)
    train(config, tmp_path / "straight", progress=False)
    assert meta(tmp_path / "straight", "best")["epoch"] == 2  # the loss improves every epoch

    crash = CrashAfterSave("best", epoch=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, tmp_path / "resumed", progress=False, callbacks=crash)
    assert meta(tmp_path / "resumed", "last")["epoch"] == 1
    assert meta(tmp_path / "resumed", "best")["epoch"] == 2
    train(config, tmp_path / "resumed", resume=True, progress=False)
    assert meta(tmp_path / "resumed", "best")["epoch"] == 2
    assert_identical(weights(tmp_path / "resumed", "best"), weights(tmp_path / "straight", "best"))
    assert_identical(weights(tmp_path / "resumed"), weights(tmp_path / "straight"))
    assert without_timing(read_metrics(tmp_path / "resumed")) == without_timing(
        read_metrics(tmp_path / "straight")
    )


def test_a_crash_while_deleting_the_old_copy_leaves_no_half_checkpoint(
    tmp_path, tiny_run, monkeypatch
):
    """Saving `last/` ends by deleting the previous copy; a crash halfway through that delete
    must not leave a half-deleted folder under a checkpoint's name (here `.last.old`)."""
    train(tiny_run(epochs=3), tmp_path / "straight", progress=False)
    train(tiny_run(epochs=1), tmp_path / "run", progress=False)
    rmtree = checkpoint_module.shutil.rmtree

    def crash_midway(path, *args, **kwargs):
        weights_file = Path(path) / "model.safetensors"
        if Path(path).name.startswith(".last") and weights_file.is_file():  # the old copy
            weights_file.unlink()
            raise RuntimeError("simulated crash")
        rmtree(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", crash_midway)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_run(epochs=3), tmp_path / "run", resume=True, progress=False)
    monkeypatch.undo()
    assert meta(tmp_path / "run")["epoch"] == 2  # the new `last/` was in place
    assert_every_checkpoint_loads(tmp_path / "run")
    train(tiny_run(epochs=3), tmp_path / "run", resume=True, progress=False)
    assert_identical(weights(tmp_path / "run"), weights(tmp_path / "straight"))
    assert temporaries(tmp_path / "run") == []  # what the crash left was cleared on resume


# --- NaN and Inf ---------------------------------------------------------------------------------


def poison_vae_loss(monkeypatch, poison) -> list[int]:
    """Training-mode VAE.loss calls pass through `poison(n, terms)` (n counts from 1)."""
    original, calls = VAE.loss, []

    def loss(self, x, *, kl_scale=1.0, generator=None, **options):
        terms = original(self, x, kl_scale=kl_scale, generator=generator, **options)
        if self.training:
            calls.append(len(x))
            terms = poison(len(calls), terms)
        return terms

    monkeypatch.setattr(VAE, "loss", loss)
    return calls


def bad_loss_every_third_call(value: float):
    def poison(n, terms):
        if n % 3 == 0:
            return type(terms)(total=terms.total * value, recon=terms.recon, kl=terms.kl)
        return terms

    return poison


def nan_gradient_at_call(call):
    def poison(n, terms):
        if n == call:  # the loss stays finite; its gradient does not
            terms.total.register_hook(lambda grad: grad * math.nan)
        return terms

    return poison


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_on_nan_skip_drops_batches_with_a_nan_loss_and_goes_on(
    tmp_path, tiny_run, monkeypatch, value
):
    calls = poison_vae_loss(monkeypatch, bad_loss_every_third_call(value))
    result = train(tiny_run(epochs=2, train={"on_nan": "skip"}), tmp_path, progress=False)
    assert len(calls) == 20  # 10 steps per epoch; calls 3, 6, ..., 18 were NaN
    records = read_metrics(tmp_path)
    assert [r["skipped_steps"] for r in records] == [3, 6]
    assert [r["step"] for r in records] == [10, 20]
    assert all(math.isfinite(r["train/loss"]) and math.isfinite(r["val/loss"]) for r in records)
    assert records[1]["train/loss"] < records[0]["train/loss"]
    assert_finite(result.model.state_dict())
    assert_finite(weights(tmp_path))


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_a_nan_loss_without_skip_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_run, monkeypatch, value
):
    """`last/` every 2 steps; the loss of step 3 is NaN (and so are the weights after it):
    the check before saving at step 4 stops training, and `last/` keeps step 2."""
    config = tiny_run(epochs=2, train={"checkpoint_every": 2})
    crash = CrashAtStep(3)  # what `last/` must hold: the state after step 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, tmp_path / "good", progress=False, callbacks=crash)
    files = {p.name: p.read_bytes() for p in (tmp_path / "good" / "last").iterdir()}

    poison_vae_loss(monkeypatch, bad_loss_every_third_call(value))
    with pytest.raises(TrainingDiverged, match=r"epoch 1 \(step 4\)") as error:
        train(config, tmp_path / "run", progress=False)
    message = str(error.value)
    # (a mid-epoch check reports "nan" for an infinite loss too; the wording is not pinned)
    assert "loss became" in message and "--on-nan skip" in message
    assert "kept" in message and "\n" not in message
    monkeypatch.undo()
    last = meta(tmp_path / "run")
    assert (last["epoch"], last["step"], last["batch"]) == (0, 2, 2)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run" / "last").iterdir()} == files
    assert_finite(weights(tmp_path / "run"))
    assert not (tmp_path / "run" / "best").exists()
    assert read_metrics(tmp_path / "run") == []


def test_on_nan_skip_catches_a_nan_gradient_of_a_finite_loss(tmp_path, tiny_run, monkeypatch):
    poison_vae_loss(monkeypatch, nan_gradient_at_call(5))
    with pytest.raises(TrainingDiverged):  # without skip, the NaN update ruins the weights
        train(tiny_run(epochs=1), tmp_path / "stop", progress=False)
    monkeypatch.undo()

    poison_vae_loss(monkeypatch, nan_gradient_at_call(5))
    result = train(tiny_run(epochs=2, train={"on_nan": "skip"}), tmp_path / "skip", progress=False)
    assert [r["skipped_steps"] for r in read_metrics(tmp_path / "skip")] == [1, 1]
    assert_finite(result.model.state_dict())
    assert math.isfinite(result.metrics["train/loss"])
