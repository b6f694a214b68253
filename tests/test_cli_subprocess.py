"""The `vaelab` command as a real process: exit codes, exactly one stderr line, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from vaelab.training.checkpoint import load_checkpoint

# How long a `vaelab` process may take before the test calls it hung. Far above the seconds the
# commands take on an idle machine (the default 50-epoch run: about 9 s): a loaded 2-core runner
# once ran one 10x slower and failed a 120 s limit. The limit only stops a hung process from
# blocking the suite forever; no test depends on how fast a command runs.
PROCESS_TIMEOUT = 600


def vaelab(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vaelab", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )


def test_bad_inputs_exit_non_zero_with_exactly_one_stderr_line(tmp_path: Path) -> None:
    (tmp_path / "run" / "best").mkdir(parents=True)
    (tmp_path / "run" / "best" / "meta.json").write_text("{truncated")
    cases = [
        (["train", "--epochs", "1.5"], 2, "invalid int value: '1.5'"),
        (["train", "--model", "gan"], 2, "invalid choice: 'gan'"),
        (["train", "--dataset", "missing/images", "--no-progress"], 1, "missing/images"),
        (["sample", "run"], 1, "is corrupt"),
    ]
    for args, expected_code, fragment in cases:
        result = vaelab(*args, cwd=tmp_path)
        assert result.returncode == expected_code, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("vaelab: error: ") and fragment in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing else was written


def test_diverging_training_stops_with_a_clear_message(tmp_path: Path) -> None:
    """A learning rate of 1e6 turns the loss NaN within the first epoch."""
    result = vaelab(
        "train",
        "--lr",
        "1e6",
        "--likelihood",
        "gaussian",
        "--epochs",
        "3",
        "--no-progress",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "nan" in result.stderr.lower() and "--lr" in result.stderr
    assert not (tmp_path / "run").exists()  # no epoch finished: nothing worth keeping


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python ignores SIGINT if the parent did


@pytest.mark.slow
def test_ctrl_c_exits_with_one_line_and_keeps_a_loadable_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vaelab",
            "train",
            "--epochs",
            "100000",
            "--no-progress",
            "--no-figures",
            "--out",
            str(run),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while not (run / "last" / "meta.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 130
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(f"vaelab: error: interrupted; last/ in {run} holds ")
    assert f"vaelab train --resume {run}" in stderr
    model, _, meta = load_checkpoint(run, prefer="last")
    assert meta["epoch"] >= 1 and all(torch.isfinite(p).all() for p in model.parameters())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["epoch"] >= meta["epoch"]


@pytest.mark.slow
def test_vaelab_train_alone_trains_the_default_vae_and_draws_its_figures(tmp_path: Path) -> None:
    result = vaelab("train", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""  # not a terminal: no progress bar
    run = tmp_path / "runs" / "digits-vae"
    figures = [run / name for name in ("samples.png", "reconstructions.png", "interpolation.png")]
    assert result.stdout.splitlines()[-4:] == [
        str(p.relative_to(tmp_path)) for p in [run, *figures]
    ]
    assert "epoch 50/50" in result.stdout
    for figure in figures:
        with Image.open(figure) as image:
            assert image.width >= 200 and image.height >= 50
    info = json.loads(vaelab("info", run, "--json", cwd=tmp_path).stdout)
    assert info["epochs_done"] == 50 and info["last_metrics"]["val/loss"] < 30


def test_a_reader_that_leaves_early_ends_nothing_but_the_output(tmp_path: Path) -> None:
    """`vaelab train | head -1`: once stdout's reader has gone, the log lines are dropped
    without a traceback, training goes on to the end, and the exit code is 0."""
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "train", "--epochs", "3", "--no-figures", "--out", run],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        process.stdout.close()  # what `head -1` does; the epoch lines are still to come
        _, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        process.kill()
    assert first.startswith("training a vae on digits")
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "Logging error" not in stderr and stderr == ""
    assert load_checkpoint(run, prefer="last")[2]["epoch"] == 3  # the run was not cut short
