"""The README's set-up and the Makefile agree: a laptop without CUDA gets torch's CPU wheel (issue 16, defect 8)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.units import ROOT

README = (ROOT / "README.md").read_text()
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, title
    return match.group(1)


def pip_lines(make_args: list[str], venv: Path) -> list[str]:
    # A venv that does not exist yet: make prints the lines that would create and fill it.
    done = subprocess.run(["make", "-n", "-C", str(ROOT), "demo", f"VENV={venv}", *make_args],
                          capture_output=True, text=True, timeout=60, check=True)
    return [line for line in done.stdout.splitlines() if "pip install" in line]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_torch_index_reaches_pip_only_when_given(tmp_path: Path) -> None:
    (given,) = pip_lines([f"TORCH_INDEX={CPU_INDEX}"], tmp_path / "venv")
    assert f"--extra-index-url {CPU_INDEX} " in given and "-e '.[" in given
    (default,) = pip_lines([], tmp_path / "venv")
    assert "index-url" not in default


def test_readme_set_up_keeps_two_commands_and_says_how_to_get_the_cpu_wheel() -> None:
    setup = section("Set-up on a fresh machine")
    (block,) = re.findall(r"```sh\n(.*?)```", setup, re.S)
    assert [line.split("#")[0].strip() for line in block.splitlines()] == ["make demo", "make test"]
    assert f"TORCH_INDEX={CPU_INDEX}" in setup


def test_readme_two_laptop_install_says_how_to_get_the_cpu_wheel() -> None:
    two = section("Running on two laptops")
    assert re.search(r"pip install -e '\.\[monitor\]'", two)
    assert f"--extra-index-url {CPU_INDEX}" in two
