"""Data-parallel training: `shard` partitions every global batch, and 2 processes with gloo on
the CPU train one model — identical on every rank, the same as one process for the noise-free
`ae`, one run folder written once, resumable mid-epoch — through `train` and through torchrun."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from vaelab import VaelabError, train
from vaelab.data import batch_indices
from vaelab.training import distributed as distributed_module
from vaelab.training import trainer as trainer_module
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.distributed import Distributed, distributed, shard
from vaelab.training.metrics import read_metrics

TIMING = ("epoch_seconds", "samples_per_second")
WORKER_TIMEOUT = 180

# One rank of a group: train, then save the final weights (and, if asked, the examples this
# rank trained on at each step) for the test to compare. Optional faults: a crash before the
# N-th step on every rank, or a NaN loss at the N-th training evaluation on one rank.
WORKER = r"""
import json, os, sys
import torch
from safetensors.torch import save_file
import vaelab
from vaelab.models import MODELS
from vaelab.training.callbacks import Callbacks

torch.set_num_threads(1)
args = json.loads(sys.argv[1])
rank = int(os.environ["RANK"])
config = vaelab.RunConfig.from_dict(args["config"])

class Worker(Callbacks):
    def __init__(self):
        self.steps, self.seen, self.saves = 0, [], []

    def on_batch(self, x, *, step):
        self.steps += 1
        if self.steps == args["crash_at"]:
            raise RuntimeError("simulated crash")
        if args["record"]:
            self.seen.append(x.detach().clone())

    def on_checkpoint(self, which, path):
        self.saves.append(str(path))

model_class, loss, calls = MODELS[config.model.model], MODELS[config.model.model].loss, [0]

def faulty(self, x, **kwargs):
    terms = loss(self, x, **kwargs)
    if self.training:
        calls[0] += 1
        if calls[0] == args["nan_at"] and rank == args["nan_rank"]:
            terms = type(terms)(total=terms.total * float("nan"), recon=terms.recon, kl=terms.kl)
    return terms

model_class.loss = faulty
worker = Worker()
try:
    result = vaelab.train(config, args["run_dir"], resume=args["resume"], progress=False,
                          callbacks=worker)
except RuntimeError as error:
    if "simulated crash" not in str(error):
        raise
    # train() has left the process group; skip interpreter teardown, where torch 2.13 at
    # times aborts ("terminate called without an active exception") after a failed step.
    os._exit(3)
tensors = {f"model.{k}": v.contiguous() for k, v in result.model.state_dict().items()}
tensors |= {f"seen.{i}": x.contiguous() for i, x in enumerate(worker.seen)}
save_file(tensors, args["out"])
with open(args["out"] + ".json", "w") as handle:
    json.dump({"epochs": result.epochs, "metrics": result.metrics, "saves": worker.saves}, handle)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def run_ranks(
    config: Any,
    run_dir: Path,
    out_dir: Path,
    *,
    world_size: int = 2,
    resume: bool = False,
    record: bool = False,
    crash_at: int = 0,
    nan_at: int = 0,
    nan_rank: int = -1,
) -> list[dict[str, Any]]:
    """Train `config` into `run_dir` with `world_size` worker processes joined over gloo.
    Returns each rank's {"model": state_dict, "seen": [x per step], "metrics", "epochs",
    "saves": [checkpoint paths it wrote]}; with `crash_at`, asserts that every rank crashed
    and returns []."""
    out_dir.mkdir(parents=True, exist_ok=True)
    port = str(free_port())
    processes = []
    try:
        for rank in range(world_size):
            out = out_dir / f"rank{rank}.safetensors"
            args = {
                "config": config.to_dict(),
                "run_dir": str(run_dir),
                "resume": resume,
                "record": record,
                "crash_at": crash_at,
                "nan_at": nan_at,
                "nan_rank": nan_rank,
                "out": str(out),
            }
            env = child_env(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(world_size),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
            )
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, json.dumps(args)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=WORKER_TIMEOUT) for p in processes]
    finally:
        for process in processes:
            process.kill()
    expected = 3 if crash_at else 0
    for rank, (process, (_, stderr)) in enumerate(zip(processes, outputs, strict=True)):
        assert process.returncode == expected, f"rank {rank}:\n{stderr}"
    if crash_at:
        return []
    results = []
    for rank in range(world_size):
        tensors = load_file(out_dir / f"rank{rank}.safetensors")
        model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        steps = sorted(int(k.split(".")[1]) for k in tensors if k.startswith("seen."))
        info = json.loads((out_dir / f"rank{rank}.safetensors.json").read_text())
        results.append({"model": model, "seen": [tensors[f"seen.{i}"] for i in steps], **info})
    return results


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def rows(x: torch.Tensor) -> Counter:
    """The multiset of images in x (N, C, H, W), each as a tuple of its pixel values."""
    return Counter(map(tuple, x.flatten(1).tolist()))


# --- shard: every global batch split over the ranks -------------------------------------------


@pytest.mark.parametrize(
    ("n", "batch_size", "world_size"), [(10, 4, 3), (1258, 128, 2), (7, 7, 4), (5, 2, 3), (9, 3, 1)]
)
def test_shard_partitions_each_global_batch_and_an_epoch_covers_every_index_once(
    n, batch_size, world_size
):
    generator = torch.Generator().manual_seed(0)
    covered: list[int] = []
    for idx in batch_indices(n, batch_size, shuffle=True, generator=generator):
        shares = [shard(idx, rank, world_size) for rank in range(world_size)]
        assert sorted(torch.cat(shares).tolist()) == sorted(idx.tolist())  # a partition
        sizes = [len(s) for s in shares]
        assert max(sizes) - min(sizes) <= 1  # balanced
        covered += torch.cat(shares).tolist()
    assert sorted(covered) == list(range(n))


def test_a_last_batch_smaller_than_the_world_leaves_a_rank_empty():
    """n=10, batch 4, world 3: the last global batch has 2 examples, so rank 2 gets none."""
    batches = list(batch_indices(10, 4, shuffle=False))
    assert [[shard(idx, r, 3).tolist() for r in range(3)] for idx in batches] == [
        [[0, 3], [1], [2]],
        [[4, 7], [5], [6]],
        [[8], [9], []],
    ]


@pytest.mark.parametrize(
    ("n", "batch_size", "world_size"), [(10, 4, 3), (1258, 128, 2), (5, 2, 3), (9, 3, 1)]
)
def test_local_batch_weights_make_the_rank_average_the_global_batch_mean(n, batch_size, world_size):
    """DDP averages the ranks' gradients, so sum_r weight_r * mean_r / world must equal the
    mean over the global batch (here of a per-example value standing in for the loss)."""
    values = torch.randn(n, 1, 1, 1, dtype=torch.float64)
    labels = torch.arange(n)  # a conditional model's labels travel with their images
    for idx in batch_indices(n, batch_size, shuffle=True, generator=torch.Generator()):
        average = 0.0
        for rank in range(world_size):
            group = Distributed(rank=rank, world_size=world_size)
            x, y, weight = trainer_module.local_batch(
                SimpleNamespace(group=group, train_x=values, train_y=labels), idx
            )
            assert len(x) >= 1  # every rank joins the all-reduce, even with no examples
            assert torch.equal(values[y], x)
            average += weight * x.mean().item() / world_size
        assert average == pytest.approx(values[idx].mean().item(), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("device", "backend"), [("cpu", "gloo"), ("cuda", "nccl")])
def test_distributed_joins_the_group_with_the_backend_of_the_device(monkeypatch, device, backend):
    calls: list[Any] = []
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(distributed_module, "resolve_device", lambda name: torch.device(device))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda name, **kw: calls.append(name))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    with distributed("auto") as group:
        assert (group.rank, group.world_size, group.enabled, group.is_main) == (1, 2, True, False)
        expected = torch.device("cuda", 1) if device == "cuda" else torch.device("cpu")
        assert group.device == expected
        assert calls[-1] == backend
    assert calls[-2:] == ["barrier", "destroy"]  # all ranks done before the teardown
    assert (("set_device", torch.device("cuda", 1)) in calls) == (device == "cuda")


def test_without_torchrun_distributed_is_a_single_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(dist, "init_process_group", pytest.fail)
    with distributed("cpu") as group:
        assert (group.rank, group.world_size, group.enabled, group.is_main) == (0, 1, False, True)
        assert group.any(True) and not group.any(False)
        assert group.gather({"a": 1}) == [{"a": 1}]


# --- two processes with gloo -------------------------------------------------------------------


@pytest.mark.slow
def test_two_ranks_train_one_ae_equal_to_a_single_process(tmp_path, tiny_run, digits_x):
    """Batch 419 over 1258 examples: 3 full batches and one of a single example, which leaves
    rank 1 with nothing in the last step of every epoch."""
    config = tiny_run(epochs=2, model={"model": "ae"}, train={"batch_size": 419})
    ranks = run_ranks(config, tmp_path / "ddp", tmp_path / "out", record=True)
    assert_identical(ranks[0]["model"], ranks[1]["model"])
    assert ranks[1]["saves"] == []  # only rank 0 writes checkpoints
    assert Counter(Path(p).name for p in ranks[0]["saves"]) == {"last": 2, "best": 2}

    steps_per_epoch = math.ceil(len(digits_x) / 419)
    for rank, last_size in zip(ranks, (1, 0), strict=True):
        assert len(rank["seen"]) == 2 * steps_per_epoch  # one loss evaluation per step
        assert len(rank["seen"][steps_per_epoch - 1]) == last_size
    for epoch in range(2):
        steps = slice(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
        seen = torch.cat([x for rank in ranks for x in rank["seen"][steps]])
        assert rows(seen) == rows(digits_x)  # the whole training set, each image once
    per_rank = [sum(len(x) for x in rank["seen"]) for rank in ranks]
    assert per_rank == [2 * 631, 2 * 627]  # 210 + 210 + 210 + 1 and 209 + 209 + 209 + 0

    single = train(config, tmp_path / "single", progress=False)
    reference = single.model.state_dict()
    for name, tensor in ranks[0]["model"].items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=1e-6)  # measured: 3e-8

    records = read_metrics(tmp_path / "ddp")  # written by rank 0 alone: one line per epoch
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["step"] for r in records] == [steps_per_epoch, 2 * steps_per_epoch]
    expected = without_timing(read_metrics(tmp_path / "single"))
    for got, want in zip(without_timing(records), expected, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, str):  # the precision
                assert got[key] == value, key
            else:
                assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    final = without_timing([ranks[0]["metrics"], ranks[1]["metrics"], records[-1]])
    assert final[0] == final[1] == final[2]
    assert ranks[0]["epochs"] == ranks[1]["epochs"] == 2
    assert not [p.name for p in (tmp_path / "ddp").iterdir() if p.name.startswith(".")]
    saved, _, _ = load_checkpoint(tmp_path / "ddp", prefer="last")
    assert_identical(saved.state_dict(), ranks[0]["model"])


@pytest.mark.slow
@pytest.mark.parametrize("update", ["ema", "loss"])
def test_two_ranks_train_one_vqvae_with_one_codebook(tmp_path, tiny_run, update):
    """The codebook's statistics are summed over the ranks and its restarts come from rank 0,
    so both ranks end with the same codebook (a buffer for ema, a parameter for loss)."""
    model = {"model": "vqvae", "codebook_size": 16, "code_dim": 4, "codebook_update": update}
    config = tiny_run(epochs=2, model=model)
    ranks = run_ranks(config, tmp_path / "ddp", tmp_path / "out")
    assert_identical(ranks[0]["model"], ranks[1]["model"])
    records = read_metrics(tmp_path / "ddp")
    assert records[-1]["train/loss"] < records[0]["train/loss"]
    assert records[-1]["val/codebook_usage"] > 0.5


@pytest.mark.slow
def test_two_ranks_train_one_factorvae_with_one_discriminator(tmp_path, tiny_run):
    """FactorVAE's one backward pass (the VAE's loss reads detached discriminator weights, the
    discriminator's reads detached codes) gives every parameter a gradient on every rank, as
    DistributedDataParallel needs, and both ranks end with the same VAE and discriminator."""
    model = {"model": "factorvae", "discriminator_hidden": [16, 16], "latent_dim": 3}
    config = tiny_run(epochs=2, model=model)
    ranks = run_ranks(config, tmp_path / "ddp", tmp_path / "out")
    assert_identical(ranks[0]["model"], ranks[1]["model"])
    assert any(name.startswith("discriminator.") for name in ranks[0]["model"])
    records = read_metrics(tmp_path / "ddp")
    assert records[-1]["train/loss"] < records[0]["train/loss"]


def test_two_ranks_train_one_semi_supervised_m2(tmp_path, tiny_run):
    """An m2's step reads each rank's share of the unlabelled batch and of the labelled one;
    its classifier, encoder and decoder all receive gradients on every rank, and both ranks
    end with the same weights and a measured validation accuracy."""
    config = tiny_run(epochs=2, model={"model": "m2"}, data={"labelled": 50})
    ranks = run_ranks(config, tmp_path / "ddp", tmp_path / "out")
    assert_identical(ranks[0]["model"], ranks[1]["model"])
    assert any(name.startswith("classifier.") for name in ranks[0]["model"])
    records = read_metrics(tmp_path / "ddp")
    assert "val/accuracy" in records[-1]
    assert records[-1]["train/loss"] < records[0]["train/loss"]
    assert json.loads((tmp_path / "ddp" / "labelled.json").read_text())["labelled"] == 50


@pytest.mark.slow
def test_two_ranks_resume_a_vae_mid_epoch_bit_for_bit(tmp_path, tiny_run):
    """A VAE (per-rank sampling noise) trains under 2 ranks and its loss falls; a crash at
    step 15 after a checkpoint at step 12 (epoch 2, batch 2), resumed under 2 ranks, ends
    with the weights and metrics of the uninterrupted run."""
    config = tiny_run(epochs=3, model={"hidden_dims": [64]})
    straight = run_ranks(config, tmp_path / "straight", tmp_path / "out-straight")
    assert_identical(straight[0]["model"], straight[1]["model"])
    records = read_metrics(tmp_path / "straight")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["train/loss"] < records[0]["train/loss"] - 1.0
    assert records[-1]["val/loss"] < records[0]["val/loss"]

    interrupted = config.updated({"train": {"checkpoint_every": 4}})
    run = tmp_path / "resumed"
    run_ranks(interrupted, run, tmp_path / "out-crash", crash_at=15)
    meta = json.loads((run / "last" / "meta.json").read_text())
    assert (meta["epoch"], meta["step"], meta["batch"]) == (1, 12, 2)
    state = json.loads((run / "last" / "training_state.json").read_text())
    assert state["world_size"] == 2 and len(state["seen"]) == 2
    rng = load_file(run / "last" / "training_state.safetensors")
    assert not torch.equal(rng["rng.noise.rank0"], rng["rng.noise.rank1"])  # own noise per rank
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(VaelabError, match="saved mid-epoch by 2 processes"):
        train(interrupted, run, resume=True, progress=False)  # one process cannot continue it
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    resumed = run_ranks(interrupted, run, tmp_path / "out-resumed", resume=True)
    assert_identical(resumed[0]["model"], resumed[1]["model"])
    assert_identical(resumed[0]["model"], straight[0]["model"])
    assert without_timing(read_metrics(run)) == without_timing(records)


@pytest.mark.slow
def test_two_ranks_train_an_amp_vae_in_bf16_with_one_set_of_weights(
    tmp_path, tiny_run, monkeypatch
):
    """--amp under DDP: bfloat16 networks on every rank (the workers read the same override
    of the CPU's support), gradients averaged in fp32, the same weights on both ranks, and
    a loss that falls as the fp32 run's does."""
    monkeypatch.setenv("VAELAB_NATIVE_BF16", "1")
    config = tiny_run(epochs=3, model={"hidden_dims": [64]}, train={"amp": True})
    ranks = run_ranks(config, tmp_path / "ddp", tmp_path / "out")
    assert_identical(ranks[0]["model"], ranks[1]["model"])
    assert {tensor.dtype for tensor in ranks[0]["model"].values()} == {torch.float32}
    records = read_metrics(tmp_path / "ddp")
    assert [r["precision"] for r in records] == ["bf16"] * 3
    assert records[-1]["train/loss"] < records[0]["train/loss"] - 1.0
    exact = run_ranks(
        config.updated({"train": {"amp": False}}), tmp_path / "fp32", tmp_path / "out-fp32"
    )
    assert not torch.equal(exact[0]["model"]["decoder.net.0.weight"],
                           ranks[0]["model"]["decoder.net.0.weight"])  # fmt: skip
    assert records[-1]["val/loss"] == pytest.approx(read_metrics(tmp_path / "fp32")[-1]["val/loss"],
                                                    rel=0.05)  # fmt: skip


@pytest.mark.slow
def test_two_ranks_skip_a_nan_on_one_rank_together(tmp_path, tiny_run):
    """`--on-nan skip`: a NaN loss on rank 1 alone makes the all-reduced gradients NaN on
    both ranks, so both skip that step and stay identical."""
    config = tiny_run(epochs=2, model={"model": "ae"}, train={"on_nan": "skip"})
    ranks = run_ranks(config, tmp_path / "run", tmp_path / "out", nan_at=5, nan_rank=1)
    assert_identical(ranks[0]["model"], ranks[1]["model"])
    assert all(torch.isfinite(t).all() for t in ranks[0]["model"].values())
    records = read_metrics(tmp_path / "run")
    assert [r["skipped_steps"] for r in records] == [1, 1]
    assert all(math.isfinite(r["train/loss"]) for r in records)


# --- through torchrun --------------------------------------------------------------------------


def torchrun(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "vaelab",
        "train",
        *map(str, args),
    ]
    result = subprocess.run(
        command, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=WORKER_TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_torchrun_trains_resumes_and_prints_once(tmp_path):
    options = ("--model", "ae", "--latent-dim", "2", "--no-figures", "--no-progress")
    first = torchrun(*options, "--epochs", "2", "--out", "run", cwd=tmp_path)
    assert first.stdout.splitlines().count("run") == 1  # the run path, from rank 0 only
    assert first.stdout.count("epoch 2/2") == 1
    resumed = torchrun(*options, "--resume", "run", "--epochs", "3", cwd=tmp_path)
    assert resumed.stdout.splitlines().count("run") == 1
    assert resumed.stdout.count("epoch 3/3") == 1
    straight = torchrun(*options, "--epochs", "3", "--out", "straight", cwd=tmp_path)

    for which in ("last", "best"):
        a, _, meta = load_checkpoint(tmp_path / "run", prefer=which)
        b, _, straight_meta = load_checkpoint(tmp_path / "straight", prefer=which)
        assert_identical(a.state_dict(), b.state_dict())  # bitwise, not merely close
        assert meta["epoch"] == straight_meta["epoch"]
    assert load_checkpoint(tmp_path / "run", prefer="last")[2]["epoch"] == 3
    records = without_timing(read_metrics(tmp_path / "run"))
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records == without_timing(read_metrics(tmp_path / "straight"))
    assert straight.stdout.splitlines().count("straight") == 1
