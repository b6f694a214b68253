"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_python_examples() -> None:
    assert python_blocks(), "README.md lost its Python examples"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index: int, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples write runs/... relative to the working directory
    namespace: dict = {}
    exec(compile(python_blocks()[index], f"README.md example {index}", "exec"), namespace)
    if "terms" in namespace:  # the API example: check what it claims
        assert namespace["codes"].shape == (8, 2)
        assert namespace["path"].shape == (10, 1, 8, 8)
        assert float(namespace["terms"].total) > 0


def test_readme_toml_example_is_a_valid_config() -> None:
    import tomllib

    from vaelab import RunConfig

    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md lost its TOML example"
    for block in blocks:
        config = RunConfig.from_dict(tomllib.loads(block))
        assert config.model.architecture == "conv"


@pytest.mark.parametrize("preset", sorted((README.parent / "presets").glob("*.toml")), ids=str)
def test_presets_are_valid_configs(preset: Path) -> None:
    from vaelab import build_model
    from vaelab.training.config import RunConfig, read_config_file

    config = RunConfig.from_dict(read_config_file(preset))
    assert build_model(config.model).config == config.model
    assert preset.name in README.read_text()  # each preset is documented


def test_readme_comparison_table_has_only_rows_that_compare_prints() -> None:
    from vaelab.analysis.compare_report import MEASURES

    titles = {title for title, _ in MEASURES.values()}
    section = README.read_text().split("## AE against VAE")[1].split("\n## ")[0]
    rows = re.findall(r"^\| ([^|]+?) \| [\d.]+ \| [\d.]+ \|$", section, flags=re.M)
    assert rows, "the comparison table is gone"
    assert set(rows) <= titles


def test_readme_documents_the_npz_keys() -> None:
    from vaelab.data.arrays import IMAGE_KEYS, LABEL_KEYS

    text = README.read_text()
    assert all(f"`{key}`" in text for key in (*IMAGE_KEYS, *LABEL_KEYS))


def test_readme_run_folder_lists_what_plot_and_report_write() -> None:
    listing = README.read_text().split("### The run folder")[1].split("```")[1]
    assert "plots/" in listing and "report.html" in listing


def test_readme_creates_every_run_it_uses() -> None:
    """Each `runs/NAME` a command reads is written by some `--out runs/NAME` first."""
    text = README.read_text()
    created = set(re.findall(r"--out (runs/[\w-]+)", text)) | {"runs/demo", "runs/api-demo"}
    used = set(re.findall(r"^vaelab \w+ (runs/[\w-]+)", text, flags=re.M))
    assert used and used <= created
