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
