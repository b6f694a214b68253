"""What a newcomer meets first: the README's set-up, `make install`, and `vaelab --help`."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vaelab.cli import build_parser
from vaelab.cli.app import EXAMPLES, SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def readme_section(title: str) -> str:
    """The text of the README's `## title...` section, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}.*?\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def make_variable(name: str) -> str:
    match = re.search(rf"^{name} \?= ?(.*)$", MAKEFILE, re.M)
    assert match, f"the Makefile does not set {name}"
    return match.group(1).strip()


# --- make install: the CPU build where PyTorch's index is reachable, PyPI where not -----------


def make_dry_run(tmp_path: Path, *variables: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"  # a fresh one, so that make has everything to do
    result = subprocess.run(
        ["make", "-n", "install", f"VENV={venv}", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_install_takes_torch_from_the_cpu_index_and_falls_back_to_pypi_fast(tmp_path) -> None:
    torch, index = make_variable("TORCH"), make_variable("TORCH_INDEX")
    assert index == "https://download.pytorch.org/whl/cpu"
    commands = make_dry_run(tmp_path).replace("\\\n", " ")
    attempt, fallback = commands.split("||")[:2]
    assert f'--index-url "{index}"' in attempt and f'"{torch}"' in attempt
    # An unreachable index must cost seconds, not pip's default 180 s timeout and 5 retries.
    assert "--timeout 5 --retries 0" in attempt
    assert re.search(rf'pip install --quiet "{re.escape(torch)}"', fallback)
    assert "--index-url" not in fallback
    assert commands.index("--index-url") < commands.index('-e ".[dev]"')  # torch first


def test_an_empty_torch_index_installs_from_pypi_directly(tmp_path) -> None:
    commands = make_dry_run(tmp_path, "TORCH_INDEX=", "TORCH=torch")
    assert "--index-url" not in commands and "||" not in commands
    assert 'pip install --quiet "torch"' in commands


def test_readme_states_which_torch_and_how_to_choose() -> None:
    setup = readme_section("Set-up")
    assert make_variable("TORCH") in setup and make_variable("TORCH_INDEX") in setup
    assert "TORCH_INDEX=" in setup  # how to go to PyPI (a GPU machine)
    assert "754 MB" in setup and "several GB" in setup  # the CPU build, measured; the CUDA one
    assert "--timeout 5 --retries 0" in setup


# --- after the set-up: the commands, and the data the MNIST tests need ------------------------


def test_readme_says_how_to_reach_the_commands() -> None:
    setup = readme_section("Set-up")
    assert "source .venv/bin/activate" in setup and ".venv/bin/vaelab" in setup
    assert "source .venv/bin/activate" in readme_section("Quickstart")
    assert "source $(BIN)/activate" in MAKEFILE  # `make install` says it too


def test_readme_setup_says_the_mnist_tests_need_vaelab_data() -> None:
    setup = readme_section("Set-up")
    assert "VAELAB_DATA" in setup and "skip" in setup


def test_readme_quickstart_gives_measured_wall_time_and_loss() -> None:
    quickstart = readme_section("Quickstart")
    assert re.search(r"took \d+ min \d+ s of wall time", quickstart)
    assert "--threads 1" in quickstart and "151.5" in quickstart


def test_interpolation_ends_are_explained_as_test_indices() -> None:
    assert "--from 3 --to 2" in README and "indices into the test split" in README
    assert re.search(r"--from 3 --to 2 .*test images 3 and 2 \(a 0 and a 1\)", EXAMPLES)


# --- vaelab --help: quick, complete and consistent --------------------------------------------


def imported_modules(*args: str) -> tuple[set[str], subprocess.CompletedProcess]:
    """Run `python -X importtime -m vaelab ARGS`; the top-level packages it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "vaelab", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    names = re.findall(r"^import time:.*\|\s*([\w.]+)$", result.stderr, re.M)
    return {name.split(".")[0] for name in names}, result


@pytest.mark.parametrize(
    "args, code",
    [(["--help"], 0), ([], 2), (["--version"], 0), (["trian"], 2), (["serve", "--help"], 0)],
)
def test_help_and_argument_errors_do_not_import_torch(args: list[str], code: int) -> None:
    """torch and matplotlib take seconds to import (13 s on a loaded machine): --help must not
    wait for them."""
    modules, result = imported_modules(*args)
    assert result.returncode == code, result.stderr[-2000:]
    assert "vaelab" in modules  # the measurement saw the imports
    assert not modules & {"torch", "matplotlib"}


def test_the_quick_parser_lists_what_the_full_one_does() -> None:
    assert build_parser([]).format_help() == build_parser().format_help()


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_is_described_and_shows_its_defaults() -> None:
    parsers = subcommand_parsers()
    assert list(parsers) == list(SUBCOMMANDS)
    for name, parser in parsers.items():
        assert parser.description, f"vaelab {name} --help has no description"
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0:  # RUN, flags, --help
                continue
            if action.default not in (None, argparse.SUPPRESS) or action.dest.count("."):
                assert "(default: " in action.help, f"vaelab {name} {action.option_strings[0]}"


def test_device_choices_agree_with_the_config() -> None:
    from vaelab.cli.arguments import DEVICES
    from vaelab.training.config import DEVICES as CONFIG_DEVICES

    assert DEVICES == CONFIG_DEVICES


def test_the_package_still_exports_its_public_names() -> None:
    import vaelab

    for name in vaelab.__all__:
        assert getattr(vaelab, name) is not None
    assert set(vaelab.__all__) <= set(dir(vaelab))
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        vaelab.nonsense  # noqa: B018


# --- library errors speak to Python callers too -----------------------------------------------


def test_run_folder_errors_name_the_argument_and_the_flag(tmp_path, tiny_run) -> None:
    from vaelab import VaelabError, train

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(VaelabError) as error:
        train(tiny_run(epochs=1), tmp_path, progress=False)
    message = str(error.value)
    assert "force=True (--force)" in message and "\n" not in message
    train(tiny_run(epochs=1), tmp_path, progress=False, force=True)
    with pytest.raises(VaelabError, match=r"resume=True \(--resume\).*force=True \(--force\)"):
        train(tiny_run(epochs=1), tmp_path, progress=False)
