"""The locked dependencies: current with pyproject.toml, installed as locked, and free of known fixes.

`requirements/runtime.txt` (what the image installs) and `requirements/dev.txt` (what `make setup` installs)
pin every package by version and hash; `make lock` writes them with uv. A lock that no longer follows
pyproject.toml fails here, and so does a pinned version with a published vulnerability that has a fix
(pip-audit against PyPI's vulnerability data), unless `requirements/audit-allowlist.toml` accepts it with a
reason and an expiry not yet passed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"
LOCKS = ("runtime.txt", "dev.txt")
BIN = Path(sys.executable).parent


def test_the_lock_files_are_what_make_lock_writes_from_pyproject(tmp_path: Path) -> None:
    # uv starts from the existing pins (kept where they still satisfy pyproject.toml): a lock that is current
    # comes back unchanged; a dependency added, removed or narrowed in pyproject.toml changes it.
    env = {**os.environ, "UV": str(BIN / "uv")}
    scratch = tmp_path / "repo"
    (scratch / "requirements").mkdir(parents=True)
    (scratch / "hack").mkdir()
    shutil.copy(REPO / "pyproject.toml", scratch / "pyproject.toml")
    shutil.copy(REPO / "README.md", scratch / "README.md")
    shutil.copy(REPO / "hack" / "lock.sh", scratch / "hack" / "lock.sh")
    for name in LOCKS:
        shutil.copy(REQUIREMENTS / name, scratch / "requirements" / name)
    result = subprocess.run(
        [scratch / "hack" / "lock.sh"], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    for name in LOCKS:
        assert (scratch / "requirements" / name).read_text() == (REQUIREMENTS / name).read_text(), (
            f"requirements/{name} is not current with pyproject.toml: run `make lock` and commit the result"
        )


def test_every_locked_requirement_is_pinned_with_hashes() -> None:
    for name in LOCKS:
        lines = (REQUIREMENTS / name).read_text().splitlines()
        pins = [line for line in lines if line and not line.startswith((" ", "#"))]
        assert pins, name
        for pin in pins:
            assert "==" in pin, f"{name}: {pin} is not pinned to one version"
            assert pin.endswith("\\"), f"{name}: {pin} has no hash"


def test_the_runtime_lock_is_what_the_dev_lock_holds_too() -> None:
    # The tests run on exactly the versions the image ships.
    def pins(name: str) -> set[str]:
        lines = (REQUIREMENTS / name).read_text().splitlines()
        return {line.split(" ")[0] for line in lines if line and not line.startswith((" ", "#"))}

    assert pins("runtime.txt") <= pins("dev.txt")


def test_no_locked_dependency_has_a_known_vulnerability_with_a_fix() -> None:
    accepted = tomllib.loads((REQUIREMENTS / "audit-allowlist.toml").read_text()).get("accepted", [])
    today = dt.datetime.now(dt.UTC).date()
    expired = [entry["id"] for entry in accepted if entry["expires"] < today]
    assert not expired, (
        f"accepted vulnerabilities past their expiry (fix them or renew with a reason): {expired}"
    )
    ignored = [argument for entry in accepted for argument in ("--ignore-vuln", entry["id"])]
    result = subprocess.run(
        [
            BIN / "pip-audit",
            *("--requirement", REQUIREMENTS / "runtime.txt"),
            *("--requirement", REQUIREMENTS / "dev.txt"),
            "--require-hashes",
            "--disable-pip",
            *("--vulnerability-service", "pypi"),
            *("--format", "json"),
            "--progress-spinner=off",
            *ignored,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(result.stdout or "{}")
    assert report.get("dependencies"), f"pip-audit checked nothing: {result.stderr}"
    found = [
        f"{dependency['name']} {dependency['version']}: {vulnerability['id']} (fixed in "
        f"{', '.join(vulnerability['fix_versions'])})"
        for dependency in report.get("dependencies", [])
        for vulnerability in dependency.get("vulns", [])
        if vulnerability.get("fix_versions")
    ]
    assert result.returncode in {0, 1}, result.stderr
    assert not found, (
        "locked dependencies with a known vulnerability and a fix: upgrade them (`make lock UPGRADE=1`) or "
        f"accept each in requirements/audit-allowlist.toml with a reason and an expiry: {found}"
    )
