"""Measuring conditional runs (cvae, m2): `vaelab eval` on what each models, label fidelity,
M2's classifier, `vaelab predict`, and the plot and report of a conditional run."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import pytest
import torch

import vaelab
from test_cli import assert_one_line_error, run_cli
from vaelab import RunConfig
from vaelab.analysis.evaluate import evaluate, image_seed
from vaelab.analysis.labels import (
    LabelFidelity,
    class_probabilities,
    classification_summary,
    label_fidelity,
)
from vaelab.data import DataConfig, load_data
from vaelab.errors import VaelabError

K = 20  # importance samples in these tests


def _config(model: dict, data: dict | None = None, seed: int = 0) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"latent_dim": 2, "hidden_dims": [32], **model},
            "data": {"dataset": "digits", **(data or {})},
            "optim": {"lr": 3e-3},
            "train": {"epochs": 2, "batch_size": 128, "device": "cpu", "seed": seed},
        }
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny runs on digits: a label cvae, two m2 (50 labels, two seeds), a cvae conditioned
    on the left half of the image, and a plain vae."""
    root = tmp_path_factory.mktemp("conditional")
    configs = {
        "cvae": _config({"model": "cvae"}),
        "m2": _config({"model": "m2"}, {"labelled": 50}),
        "m2-seed1": _config({"model": "m2"}, {"labelled": 50}, seed=1),
        "observed": _config({"model": "cvae", "observe": "left"}),
        "vae": _config({"model": "vae"}),
    }
    return {
        name: vaelab.train(config, root / name, progress=False).run_dir
        for name, config in configs.items()
    }


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory: pytest.TempPathFactory):
    """One classifier cache for the module: digits' classifier is trained once (~10 s)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAELAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def test_split():
    return load_data(DataConfig(dataset="digits"), progress=False).test


def _direct_nll(model, x: torch.Tensor, y: torch.Tensor | None, *, k: int, seed: int) -> float:
    """-mean_i log_mean_exp(model.log_weights(x_i, k, y=y_i)), image i's noise from the seed
    `evaluate` gives it."""
    estimates = []
    with torch.inference_mode():
        for i in range(len(x)):
            generator = torch.Generator().manual_seed(image_seed(seed, i))
            kwargs = {} if y is None else {"y": y[i : i + 1]}
            weights = model.log_weights(x[i : i + 1], k, generator=generator, **kwargs).double()
            estimates.append(torch.logsumexp(weights, 0) - math.log(len(weights)))
    return -float(torch.cat(estimates).mean())


# --- the likelihood: what each conditional model is scored on ---------------------------------


@pytest.mark.parametrize(
    ("name", "with_labels", "quantity"),
    [
        ("cvae", True, "-log p(x|y)"),
        ("m2", False, "-log p(x)"),  # y marginalised
        ("observed", False, "-log p(x_unobserved | x_observed)"),
    ],
)
def test_eval_nll_is_the_bound_log_weights_gives(runs, test_split, name, with_labels, quantity):
    model = vaelab.load(runs[name])
    x, y = test_split.x[:30], test_split.y[:30]
    result = evaluate(model, x, y=y, k=K, chunk=64, seed=3)
    assert result.nll_of == quantity
    direct = _direct_nll(model, x, y if with_labels else None, k=K, seed=3)
    assert result.nll == pytest.approx(direct, abs=1e-4)  # the same samples, batched otherwise
    assert result.nll <= result.neg_elbo + 1.0  # a bound at least about as tight as the ELBO


@pytest.mark.parametrize("name", ["cvae", "m2", "observed"])
def test_chunk_does_not_change_a_conditional_result(runs, test_split, name) -> None:
    model = vaelab.load(runs[name])
    x, y = test_split.x[:12], test_split.y[:12]
    small, large = (evaluate(model, x, y=y, k=K, chunk=c, seed=1) for c in (7, 100_000))
    for field in ("nll", "neg_elbo", "recon", "kl", "mse"):
        assert getattr(small, field) == pytest.approx(getattr(large, field), rel=1e-6), field


def test_the_m2_elbo_is_minus_u_of_its_objective(runs, test_split) -> None:
    """-U(x) (Kingma et al. 2014, eq. 7) is the loss of unlabelled images; the one-sample
    loss averaged over many draws agrees with eval's negative ELBO."""
    model = vaelab.load(runs["m2"])
    x = test_split.x[:40]
    result = evaluate(model, x, k=100, seed=0)
    with torch.inference_mode():
        losses = [
            float(model.loss(x, generator=torch.Generator().manual_seed(s)).total)
            for s in range(100)
        ]
    assert result.neg_elbo == pytest.approx(statistics.fmean(losses), abs=0.1)
    assert 0 <= result.kl_label <= math.log(model.classes) + 1e-6


def test_a_label_cvae_needs_labels(runs, test_split) -> None:
    model = vaelab.load(runs["cvae"])
    with pytest.raises(VaelabError, match="needs the images' labels"):
        evaluate(model, test_split.x[:5], k=2)


def test_m2_accuracy_is_its_classifiers_argmax(runs, test_split) -> None:
    model = vaelab.load(runs["m2"])
    x, y = test_split.x, test_split.y
    result = evaluate(model, x, y=y, k=2, seed=0)
    with torch.inference_mode():
        predicted = model.predict_proba(x).argmax(dim=1)
    assert result.accuracy == int((predicted == y).sum()) / len(y)
    summary = classification_summary(model, x, y)
    confusion = torch.tensor(summary.confusion)
    assert confusion.sum(dim=1).tolist() == torch.bincount(y, minlength=10).tolist()
    assert confusion.sum(dim=0).tolist() == torch.bincount(predicted, minlength=10).tolist()
    assert summary.accuracy == pytest.approx(float(confusion.trace()) / len(y))
    assert result.confusion == [list(row) for row in summary.confusion]


def test_classification_summary_leaves_out_unknown_labels(runs, test_split) -> None:
    model = vaelab.load(runs["m2"])
    y = test_split.y[:50].clone()
    y[::2] = -1
    summary = classification_summary(model, test_split.x[:50], y)
    assert summary.examples == 25 and sum(map(sum, summary.confusion)) == 25
    with pytest.raises(VaelabError, match="no classifier"):
        classification_summary(vaelab.load(runs["cvae"]), test_split.x[:5], test_split.y[:5])


# --- label fidelity ---------------------------------------------------------------------------


class AlwaysClassZero:
    """A stub classifier that answers class 0 for every image."""

    def __init__(self, classes: int = 10) -> None:
        self.classes = classes
        self.seen = 0

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        probs = torch.zeros(len(x), self.classes)
        probs[:, 0] = 1.0
        return probs


@pytest.mark.parametrize("name", ["cvae", "m2"])
def test_label_fidelity_of_a_classifier_that_always_says_zero(runs, name) -> None:
    stub = AlwaysClassZero()
    fidelity = label_fidelity(vaelab.load(runs[name]), stub, per_class=30, seed=1)
    assert fidelity.per_class == (1.0,) + (0.0,) * 9
    assert fidelity.mean == pytest.approx(0.1)
    assert stub.seen == 300  # per_class samples of each of the 10 classes
    assert fidelity.to_dict()["per_class"] == list(fidelity.per_class)


def test_label_fidelity_is_seeded_and_refuses_other_models(runs) -> None:
    model = vaelab.load(runs["cvae"])

    class Brightness:  # class = how bright the sample is, in 10 bins
        def probabilities(self, x: torch.Tensor) -> torch.Tensor:
            bins = (x.flatten(1).mean(1) * 40).long().clamp(0, 9)
            return torch.nn.functional.one_hot(bins, 10).float()

    first = label_fidelity(model, Brightness(), per_class=50, seed=4)
    assert first == label_fidelity(model, Brightness(), per_class=50, seed=4)
    assert isinstance(first, LabelFidelity) and len(first.per_class) == 10
    for name in ("observed", "vae"):
        with pytest.raises(VaelabError, match="conditional on class labels"):
            label_fidelity(vaelab.load(runs[name]), Brightness(), per_class=5)


def test_label_fidelity_of_a_decoder_that_ignores_the_label(runs, classifier_cache) -> None:
    """With the label's weights into the decoder zeroed, every label draws from one and the
    same image distribution: the shares the classifier gives its classes sum to about 1."""
    from vaelab.analysis.classifier import classifier_for

    model = vaelab.load(runs["cvae"])
    linear = next(m for m in model.decoder.net.modules() if isinstance(m, torch.nn.Linear))
    assert linear.in_features == model.config.latent_dim + model.classes  # reads [z, one_hot(y)]
    with torch.no_grad():
        linear.weight[:, model.config.latent_dim :] = 0.0  # the one-hot label's columns
    classifier = classifier_for(load_data(DataConfig(dataset="digits"), progress=False))
    fidelity = label_fidelity(model, classifier, per_class=2000, seed=0)
    # Each share estimates p(class y) of the one distribution: the sum is 1 up to sampling
    # noise (standard deviation at most sqrt(1 / 2000) = 0.022).
    assert sum(fidelity.per_class) == pytest.approx(1.0, abs=0.1)


# --- vaelab eval ------------------------------------------------------------------------------


def test_eval_names_each_bound_and_keeps_it_in_eval_json(runs, capsys) -> None:
    expected = {
        "cvae": "NLL -log p(x|y), k=20",
        "m2": "NLL -log p(x), k=20",
        "observed": "NLL -log p(x_unobserved | x_observed), k=20",
    }
    for name, label in expected.items():
        code, out, err = run_cli(
            capsys, "eval", runs[name], "--k", K, "--limit", 40, "--no-fidelity", "--no-progress"
        )
        assert code == 0, err
        assert label in out and "conditioned on" in out
        record = json.loads((runs[name] / "eval.json").read_text())["best/test/k=20/first-40"]
        assert record["nll_of"] == label.split(", ")[0].removeprefix("NLL ")
        assert "label_fidelity" not in record
    record = json.loads((runs["m2"] / "eval.json").read_text())["best/test/k=20/first-40"]
    assert 0 <= record["accuracy"] <= 1 and len(record["confusion"]) == 10


def test_eval_of_an_unconditional_run_keeps_its_keys(runs, capsys) -> None:
    code, out, _ = run_cli(capsys, "eval", runs["vae"], "--k", 5, "--limit", 10, "--json")
    assert code == 0
    record = json.loads(out)
    assert not {"nll_of", "condition", "accuracy", "confusion", "label_fidelity"} & record.keys()
    assert "NLL, k=5" in run_cli(capsys, "eval", runs["vae"], "--k", 5, "--limit", 10)[1]


def test_eval_prints_label_fidelity_per_class(runs, capsys, classifier_cache) -> None:
    args = ("--k", 5, "--limit", 20, "--fidelity-samples", 40, "--no-progress")
    code, out, err = run_cli(capsys, "eval", runs["m2"], *args)
    assert code == 0, err
    record = json.loads((runs["m2"] / "eval.json").read_text())[
        "best/test/k=10/first-20"
    ]  # m2: ceil(5 / 10) = 1 per class
    fidelity = record["label_fidelity"]
    assert len(fidelity["per_class"]) == 10 and fidelity["samples_per_class"] == 40
    assert fidelity["mean"] == pytest.approx(statistics.fmean(fidelity["per_class"]))
    assert fidelity["class_names"] == [str(c) for c in range(10)]
    assert 0.9 < fidelity["classifier_accuracy"] <= 1  # trained on every label, not 50
    assert "label fidelity" in out and "per class" in out
    assert f"{fidelity['classifier_accuracy']:.4f}" in out
    for c, share in enumerate(fidelity["per_class"]):
        assert f"{c}: {share:.3f}" in out
    # The same seed draws the same samples: the library gives the same shares.
    from vaelab.analysis.classifier import classifier_for

    classifier = classifier_for(load_data(DataConfig(dataset="digits"), progress=False))
    again = label_fidelity(vaelab.load(runs["m2"]), classifier, per_class=40, seed=0)
    assert list(again.per_class) == fidelity["per_class"]


def test_eval_of_several_runs_gives_the_accuracys_mean_and_std(runs, capsys) -> None:
    pair = [runs["m2"], runs["m2-seed1"]]
    args = ("--k", 5, "--limit", 60, "--no-fidelity", "--no-progress")
    code, out, err = run_cli(capsys, "eval", *pair, *args)
    assert code == 0, err
    accuracies = [
        json.loads((run / "eval.json").read_text())["best/test/k=10/first-60"]["accuracy"]
        for run in pair
    ]
    assert out.count("classifier accuracy") == 2  # each run's table
    row = next(line for line in out.splitlines() if line.strip().startswith("mean ± std"))
    mean, std = statistics.fmean(accuracies), statistics.stdev(accuracies)
    assert f"{mean:.4f} ± {std:.4f}" in row
    code, out, _ = run_cli(capsys, "eval", *pair, *args, "--json")
    shown = json.loads(out)
    assert [r["run"] for r in shown["runs"]] == [str(run) for run in pair]
    assert shown["summary"]["measures"]["accuracy"]["std"] == pytest.approx(std)


def test_eval_of_several_runs_names_the_one_that_fails(runs, tmp_path, capsys) -> None:
    code, _, err = run_cli(capsys, "eval", runs["vae"], tmp_path / "missing", "--k", 2)
    assert_one_line_error(code, err, "missing")


# --- vaelab predict ---------------------------------------------------------------------------


def _image_file(path: Path, pixels: torch.Tensor) -> Path:
    from PIL import Image

    array = (pixels[0].numpy() * 255).round().astype("uint8")
    Image.fromarray(array).resize((32, 32)).save(path)
    return path


def test_predict_prints_every_class_probability(runs, test_split, tmp_path, capsys) -> None:
    image = _image_file(tmp_path / "digit.png", test_split.x[0])
    args = (image, "--index", 0, 5, "--top", 10, "--quiet")  # quiet: no information lines
    code, out, err = run_cli(capsys, "predict", runs["m2"], *args)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(str(image))
    assert lines[1].startswith(f"test #0 (label {int(test_split.y[0])})")
    for line in lines:
        probabilities = [float(p) for p in re.findall(r"\((\d\.\d+)\)", line)]
        assert len(probabilities) == 10 and probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
    code, out, _ = run_cli(capsys, "predict", runs["m2"], "--index", 5, "--top", 2, "--json")
    assert code == 0
    [shown] = json.loads(out)
    expected = class_probabilities(vaelab.load(runs["m2"]), test_split.x[5:6])[0]
    top = expected.topk(2)
    assert [c["class"] for c in shown["classes"]] == top.indices.tolist()
    assert [c["probability"] for c in shown["classes"]] == pytest.approx(top.values.tolist())


def test_predict_without_a_classifier_is_one_line(runs, test_split, tmp_path, capsys) -> None:
    image = _image_file(tmp_path / "digit.png", test_split.x[0])
    code, out, err = run_cli(capsys, "predict", runs["vae"], image)
    assert_one_line_error(code, err, "has no classifier")
    assert out == ""
    code, _, err = run_cli(capsys, "predict", runs["m2"], "--index", 9999)
    assert_one_line_error(code, err, "out of range")


# --- vaelab plot and report -------------------------------------------------------------------


def test_plot_of_each_conditional_run(runs, tmp_path, capsys) -> None:
    for name in ("cvae", "m2", "observed"):
        code, _, err = run_cli(capsys, "plot", runs[name], "--out", tmp_path / name, "--quiet")
        assert code == 0, err
        drawn = {p.stem for p in (tmp_path / name).glob("*.png")}
        assert {"latent_map", "manifold", "samples", "interpolations", "traversals"} <= drawn
        assert ({"class_samples", "analogies"} <= drawn) == (name != "observed")


def test_the_report_of_a_cvae_and_an_m2(runs, tmp_path, capsys, classifier_cache) -> None:
    pages = {}
    for name in ("cvae", "m2"):
        out = tmp_path / f"{name}.html"
        code, _, err = run_cli(capsys, "report", runs[name], "--out", out, "--quiet")
        assert code == 0, err
        pages[name] = out.read_text()
    for page in pages.values():
        assert '<h2 id="conditional">Conditional model</h2>' in page
        assert 'id="class_samples"' in page and 'id="analogies"' in page
        assert "Label fidelity" in page and "mean over the classes" in page
    assert "Confusion matrix" in pages["m2"] and "Classifier q(y|x)" in pages["m2"]
    assert "Confusion matrix" not in pages["cvae"]
    counts = re.findall(r'<td style="background[^>]*>(\d+)</td>', pages["m2"])
    assert sum(map(int, counts)) == 359  # every test image, once
    code, _, _ = run_cli(
        capsys, "report", runs["cvae"], "--out", tmp_path / "quick.html", "--no-fidelity"
    )
    assert code == 0 and "Not measured (--no-fidelity)" in (tmp_path / "quick.html").read_text()
