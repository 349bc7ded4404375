"""The image's Python packaging, exercised without Docker.

The builder stage's steps run here on exactly the files .dockerignore lets into the build context: build
the wheel (its build backend comes from PyPI into an isolated environment, as in the image, which is most
of this module's few seconds), install it with pip, run the installed command the way the image's
ENTRYPOINT does, with PYTHONDONTWRITEBYTECODE as the only guard against writing bytecode.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from docker_inputs import REPO_ROOT, dockerignore

IMPORT_EVERY_MODULE = """
import importlib, pkgutil, baseline_operator
for module in pkgutil.walk_packages(baseline_operator.__path__, "baseline_operator."):
    if module.name != "baseline_operator.__main__":  # that one runs the command line
        importlib.import_module(module.name)
print(baseline_operator.__file__)
"""


def pip(*arguments: str) -> None:
    command = [sys.executable, "-m", "pip", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = tmp_path_factory.mktemp("context")
    for relative in dockerignore().context(REPO_ROOT):
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, context / relative)
    wheels = tmp_path_factory.mktemp("wheels")
    pip("wheel", "--no-deps", "--wheel-dir", str(wheels), str(context))
    (built,) = wheels.glob("*.whl")
    return built


@pytest.fixture
def installed(wheel: Path, tmp_path: Path) -> Path:
    """The wheel installed into a folder of its own, without bytecode; dependencies come from this venv."""
    target = tmp_path / "site"
    pip("install", "--no-deps", "--no-index", "--no-compile", "--target", str(target), str(wheel))
    return target


def test_wheel_holds_the_package_and_never_a_top_level_operator(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert "baseline_operator" in top_level
    assert "operator" not in top_level, "it would shadow the standard library's operator module"
    assert "baseline_operator/py.typed" in names
    assert "baseline_operator/builders/__init__.py" in names


def test_wheel_maps_the_command_to_the_cli(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (entry_points,) = (name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt"))
    parser = configparser.ConfigParser()
    parser.read_string(archive.read(entry_points).decode())
    assert parser["console_scripts"]["baseline-operator"] == "baseline_operator.cli:main"


def test_installed_command_runs_and_writes_no_bytecode(installed: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(installed), "PYTHONDONTWRITEBYTECODE": "1"}

    def run(*command: str, env: dict[str, str]) -> str:
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert run(str(installed / "bin" / "baseline-operator"), "--version", env=environment).startswith(
        "baseline-operator "
    )
    assert run(sys.executable, "-m", "baseline_operator", "--version", env=environment).startswith(
        "baseline-operator "
    )
    imported_from = run(sys.executable, "-c", IMPORT_EVERY_MODULE, env=environment).strip()
    assert Path(imported_from).is_relative_to(installed), "the installed copy, not the working tree"
    assert not list(installed.rglob("__pycache__"))

    # Without the variable an import does write bytecode there, so the check above could have seen it.
    without_guard = {key: value for key, value in environment.items() if key != "PYTHONDONTWRITEBYTECODE"}
    run(sys.executable, "-c", "import baseline_operator.cli", env=without_guard)
    assert list(installed.rglob("__pycache__"))
