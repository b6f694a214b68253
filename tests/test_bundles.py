"""`vaelab pack` and bundles: one folder or .zip, laid out as a Hugging Face model repository,
that `vaelab.load` and the commands take like a run, with the same results."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

import vaelab
from test_cli import FAST, assert_one_line_error, run_cli, snapshot
from vaelab.bundles import BUNDLE_FILE
from vaelab.cli.evaluate import evaluate_run

TINY = (*FAST, "--epochs", "2", "--hidden-dims", "16", "--quiet")
MODEL_FILES = {
    "config.json",
    "model.safetensors",
    "meta.json",
    "onnx/encoder.onnx",
    "onnx/decoder.onnx",
    "onnx/onnx.json",
}


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run (VAE on digits) with an evaluation, and its bundle as a folder and as a .zip."""
    root = tmp_path_factory.mktemp("bundles")
    run = root / "runs" / "vae"
    assert vaelab.cli.main(["train", "--out", str(run), *TINY]) == 0
    assert vaelab.cli.main(["eval", str(run), "--k", "20", "-q"]) == 0
    (root / "shared").mkdir()
    for out in ("shared/digits-vae", "shared/digits-vae.zip"):
        assert vaelab.cli.main(["pack", str(run), str(root / out), "--k", "20", "-q"]) == 0
    return {"run": run, "folder": root / "shared/digits-vae", "zip": root / "shared/digits-vae.zip"}


def test_a_bundle_is_laid_out_as_a_model_repository(packed) -> None:
    folder = packed["folder"]
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == MODEL_FILES | {
        "README.md",
        "bundle.json",
        "eval.json",
        "metrics.jsonl",
        "samples.png",
    }
    card = (folder / "README.md").read_text()
    front, body = card.split("---\n")[1:3]
    assert "library_name: vaelab" in front and "- onnx" in front
    assert "# digits-vae: a VAE on 8x8 digits" in body
    assert "vaelab train --config config.json" in body
    assert "![64 images decoded" in body and "(samples.png)" in body
    nll = json.loads((packed["run"] / "eval.json").read_text())["best/test/k=20"]["nll"]
    assert f"{nll:.3f}" in body  # the run's own evaluation, copied, not measured again
    description = json.loads((folder / BUNDLE_FILE).read_text())
    assert set(description["files"]) == MODEL_FILES
    assert description["checkpoint"] == "best"
    with zipfile.ZipFile(packed["zip"]) as archive:  # the same files, in one folder
        assert set(archive.namelist()) == {f"digits-vae/{name}" for name in files}


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_pack_load_eval_gives_the_runs_nll_bit_for_bit(packed, kind: str, tmp_path) -> None:
    run_result, run_record, _ = evaluate_run(packed["run"], k=50, chunk=4096, seed=3)
    bundle_result, bundle_record, path = evaluate_run(packed[kind], k=50, chunk=4096, seed=3)
    assert bundle_result.nll == run_result.nll
    assert bundle_result.neg_elbo == run_result.neg_elbo
    assert bundle_record["checkpoint"] == "best"
    assert path == packed["folder"].parent / "digits-vae-outputs" / "eval.json"
    model, original = vaelab.load(packed[kind]), vaelab.load(packed["run"])
    for name, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], value)


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_commands_take_a_bundle(packed, kind: str, tmp_path, capsys) -> None:
    out = tmp_path / "grid.png"
    code, stdout, _ = run_cli(capsys, "sample", packed[kind], "--n", "16", "--out", out)
    assert code == 0 and out.is_file()
    code, stdout, _ = run_cli(capsys, "info", packed[kind])
    assert code == 0 and f"# checkpoint  {packed[kind]}" in stdout
    code, stdout, _ = run_cli(capsys, "reconstruct", packed[kind], "--out", tmp_path / "r.png")
    assert code == 0
    code, _, _ = run_cli(capsys, "report", packed[kind], "--out", tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert code == 0
    assert "<h2>Metrics</h2>" in page and "<h2>Evaluation (eval.json)</h2>" in page  # curves


def test_commands_never_write_into_a_bundle(packed, tmp_path, capsys) -> None:
    bundle = copy_of(packed["folder"], tmp_path / "b")
    zipped = tmp_path / "z.zip"
    zipped.write_bytes(packed["zip"].read_bytes())
    before = snapshot(bundle), zipped.read_bytes()
    for target, outputs in ((bundle, tmp_path / "b-outputs"), (zipped, tmp_path / "z-outputs")):
        for args in (
            ("sample", "--n", "4"),
            ("eval", "--k", "5"),
            ("plot",),
            ("export", "--check", "9"),
        ):
            code, stdout, _ = run_cli(capsys, args[0], target, *args[1:], "-q")
            assert code == 0, args
            assert str(outputs) in stdout or args[0] == "eval", (args, stdout)
        assert {p.name for p in outputs.iterdir()} >= {"samples.png", "eval.json", "plots", "onnx"}
    assert (snapshot(bundle), zipped.read_bytes()) == before
    assert run_cli(capsys, "sample", bundle, "-q")[0] == 0  # the bundle still loads


def test_a_zip_beside_a_run_leaves_the_runs_files_alone(packed, tmp_path, capsys) -> None:
    """A .zip dropped into another run's folder reads its own curves and evaluations and
    writes beside itself, never into the run's eval.json or metrics."""
    run = copy_of(packed["run"], tmp_path / "run")
    (run / "other.bundle").write_bytes(packed["zip"].read_bytes())  # any name: a zip by content
    (run / "metrics.jsonl").write_text('{"epoch": 7, "step": 70, "train/loss": 1.0}\n')
    before = snapshot(run)
    code, stdout, _ = run_cli(capsys, "info", run / "other.bundle")
    assert code == 0 and "# epochs      2 of 2" in stdout
    assert run_cli(capsys, "eval", run / "other.bundle", "--k", "5", "-q")[0] == 0
    written = {name for name in snapshot(run) if name not in before}
    assert written and all(name.startswith("other-outputs") for name in written)
    assert all(snapshot(run)[name] == digest for name, digest in before.items())


def test_train_config_takes_a_bundle(packed, tmp_path, capsys) -> None:
    code, _, _ = run_cli(
        capsys, "train", "--config", packed["zip"], "--out", tmp_path / "again", *TINY
    )
    assert code == 0
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["model"] == json.loads((packed["folder"] / "config.json").read_text())["model"]


def test_the_explorer_serves_a_bundle(packed) -> None:
    from vaelab.explorer.runs import load_served_run

    served = load_served_run("digits-vae", packed["zip"])
    assert served.model.config.latent_dim == 2


def test_training_into_or_resuming_a_bundle_is_refused(packed, capsys) -> None:
    before = snapshot(packed["folder"])
    for flag in ("--resume", "--out"):
        code, _, err = run_cli(capsys, "train", flag, packed["folder"], "--epochs", "3")
        assert_one_line_error(code, err, "is a bundle, which holds no training state")
    assert snapshot(packed["folder"]) == before


def copy_of(folder: Path, into: Path) -> Path:
    for file in folder.rglob("*"):
        if file.is_file():
            target = into / file.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.read_bytes())
    return into


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda b: (b / "onnx" / "decoder.onnx").unlink(), "is missing onnx/decoder.onnx"),
        (lambda b: (b / "model.safetensors").unlink(), "is missing model.safetensors"),
        (
            lambda b: (b / "config.json").write_text((b / "config.json").read_text() + " "),
            "config.json is corrupt or was changed",
        ),
        (lambda b: (b / BUNDLE_FILE).write_text("{"), "bundle.json is corrupt"),
        (lambda b: (b / BUNDLE_FILE).write_text('{"format": "other"}'), "a foreign bundle.json"),
    ],
)
def test_a_damaged_bundle_fails_in_one_line(packed, tmp_path, capsys, damage, fragment) -> None:
    bundle = copy_of(packed["folder"], tmp_path / "bundle")
    damage(bundle)
    for command in ("eval", "sample", "export", "info"):
        code, _, err = run_cli(capsys, command, bundle)
        assert_one_line_error(code, err, fragment)
    with pytest.raises(vaelab.VaelabError, match=fragment.split(" is")[0]):
        vaelab.load(bundle)


def test_a_zip_with_a_path_outside_it_is_refused(tmp_path, capsys) -> None:
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../outside.txt", "no")
        archive.writestr(BUNDLE_FILE, "{}")
    code, _, err = run_cli(capsys, "eval", tmp_path / "evil.zip")
    assert_one_line_error(code, err, "holds a file outside the bundle")
    assert not (tmp_path.parent / "outside.txt").exists()
    (tmp_path / "not.zip").write_text("text")
    code, _, err = run_cli(capsys, "sample", tmp_path / "not.zip")
    assert_one_line_error(code, err, "is not a readable .zip bundle")


def test_bad_packs_fail_in_one_line_and_leave_nothing(packed, tmp_path, capsys) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "notes.zip").write_text("not a zip")
    before = snapshot(tmp_path)
    cases = [
        (("pack", tmp_path / "no-run", tmp_path / "b"), "does not exist"),
        (("pack", packed["run"], tmp_path / "mine"), "already exists and is not one to replace"),
        (("pack", packed["run"], tmp_path / "notes.zip"), "already exists and is not a bundle"),
        (("pack", packed["run"], tmp_path / "missing" / "b"), "folder"),
        (("pack", packed["run"], tmp_path / "missing" / "b.zip"), "folder"),
    ]
    for args, fragment in cases:
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, fragment)
    assert snapshot(tmp_path) == before


def test_a_failed_pack_keeps_the_earlier_bundle(packed, tmp_path, monkeypatch, capsys) -> None:
    bundle = copy_of(packed["folder"], tmp_path / "bundle")
    before = snapshot(tmp_path)

    def fails(*args: object, **kwargs: object) -> None:
        raise vaelab.VaelabError("the disk is full")

    monkeypatch.setattr("vaelab.cli.export.export_onnx", fails)
    code, _, err = run_cli(capsys, "pack", packed["run"], bundle)
    assert_one_line_error(code, err, "the disk is full")
    assert snapshot(tmp_path) == before  # the earlier bundle, and no temporary folder
    code, _, err = run_cli(capsys, "pack", packed["run"], tmp_path / "new.zip")
    assert_one_line_error(code, err, "the disk is full")
    assert snapshot(tmp_path) == before


def test_pack_without_onnx_or_eval(packed, tmp_path, capsys) -> None:
    out = tmp_path / "plain"
    code, _, _ = run_cli(capsys, "pack", packed["run"], out, "--no-onnx", "--no-eval", "-q")
    assert code == 0
    assert not (out / "onnx").exists()
    assert set(json.loads((out / BUNDLE_FILE).read_text())["files"]) == {
        "config.json",
        "model.safetensors",
        "meta.json",
    }
    assert "onnx" not in (out / "README.md").read_text().split("---")[1]
    assert vaelab.load(out).config.latent_dim == 2


@pytest.mark.parametrize(
    "extra", [(), ("--autoregressive", "local", "--likelihood", "gaussian"), ("--model", "ae")]
)
def test_the_cards_onnx_example_runs(extra, tmp_path, monkeypatch, capsys) -> None:
    """The card's onnxruntime snippet works as written, in the bundle folder, for a factorised
    and an autoregressive decoder (which needs the images it scores)."""
    run, bundle = tmp_path / "run", tmp_path / "my bundle"
    assert run_cli(capsys, "train", "--out", run, *TINY, *extra)[0] == 0
    assert run_cli(capsys, "pack", run, bundle, "--no-eval", "-q")[0] == 0
    card = (bundle / "README.md").read_text()
    snippet = card.split("### Without PyTorch: ONNX")[1].split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(bundle)
    namespace: dict = {}
    exec(snippet, namespace)
    assert ("x" in namespace) == bool(extra)  # images to score, or to encode
    if "ae" in extra:  # no prior: no samples, no NLL
        assert "vaelab reconstruct 'my bundle' --n 10" in card and "vaelab sample" not in card
    else:
        assert "vaelab sample 'my bundle' --n 64" in card  # a shell word, quoted


def test_a_failed_command_leaves_no_outputs_folder(packed, tmp_path, capsys) -> None:
    zipped = tmp_path / "fresh.zip"
    zipped.write_bytes(packed["zip"].read_bytes())
    for args in (("sample", "--n", "5000"), ("eval", "--split", "val", "--limit", "0")):
        code, _, err = run_cli(capsys, args[0], zipped, *args[1:])
        assert code != 0
    broken = tmp_path / "broken.zip"
    broken.write_bytes(packed["zip"].read_bytes()[:500])
    assert run_cli(capsys, "sample", broken)[0] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.zip", "fresh.zip"]


def test_a_bundle_without_its_description_is_refused(packed, tmp_path, capsys) -> None:
    bundle = copy_of(packed["folder"], tmp_path / "b")
    (bundle / BUNDLE_FILE).unlink()
    code, _, err = run_cli(capsys, "sample", bundle)
    assert_one_line_error(code, err, "looks like a vaelab bundle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_a_zip_of_two_bundles_is_refused(packed, tmp_path, capsys) -> None:
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        for top in ("a", "b"):
            for file in packed["folder"].rglob("*"):
                if file.is_file():
                    archive.write(file, f"{top}/{file.relative_to(packed['folder']).as_posix()}")
    code, _, err = run_cli(capsys, "eval", tmp_path / "two.zip")
    assert_one_line_error(code, err, "holds 2 bundles; a bundle .zip holds one")


def test_an_output_under_a_file_is_named_as_such(packed, tmp_path, capsys) -> None:
    (tmp_path / "file.txt").write_text("x")
    for args in (
        ("pack", packed["run"], tmp_path / "file.txt" / "b"),
        ("pack", packed["run"], tmp_path / "file.txt" / "b.zip"),
        ("export", packed["run"], "--out", tmp_path / "file.txt" / "onnx"),
        ("sample", packed["run"], "--out", tmp_path / "file.txt" / "s.png"),
    ):
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, "file.txt is a file, not a folder")
