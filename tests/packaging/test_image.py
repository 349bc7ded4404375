"""The image `make image` built, read from the OCI archive it wrote: configuration, layers and SBOM.

The Dockerfile's properties are checked on its text (test_dockerfile.py); these are the same promises seen
in what was built. `make test` builds the image first; run alone, the fixture builds it (about two minutes
cold, before the first test: conftest.py) or skips on a machine without root or without Debian's
mmdebstrap and buildah.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from docker_inputs import REPO_ROOT, dockerignore, stages

from localcluster import operator_image, sbom

if TYPE_CHECKING:
    from collections.abc import Iterator

RUNTIME_UID = 15555
LOCKED = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)", re.MULTILINE)


@pytest.fixture(scope="module")
def built() -> operator_image.ImageReport:
    missing = operator_image.missing_prerequisites()
    if missing:
        pytest.skip("the image cannot be built here: " + "; ".join(missing))
    # conftest built it (or found it current) before the first test; this says why if that failed.
    return operator_image.last_build() or operator_image.ensure_image()


@pytest.fixture(scope="module")
def image(built: operator_image.ImageReport) -> Iterator[operator_image.OciArchive]:
    with operator_image.OciArchive(Path(built.archive)) as archive:
        yield archive


@pytest.fixture(scope="module")
def bom(built: operator_image.ImageReport) -> dict[str, Any]:
    return dict(json.loads(Path(built.sbom).read_text()))


def locked_packages() -> dict[str, str]:
    text = (REPO_ROOT / "requirements" / "runtime.txt").read_text()
    return {sbom.normalized_name(m["name"]): m["version"] for m in LOCKED.finditer(text)}


def test_the_build_context_is_what_the_dockerignore_lets_in() -> None:
    # The build is skipped while the context's digest is unchanged: that digest must cover exactly what
    # `docker build` (and buildah, which reads the same .dockerignore) would send.
    assert operator_image.context_files() == sorted(dockerignore().context(REPO_ROOT))


def test_the_image_runs_the_operator_as_15555_with_the_dockerfiles_settings(
    built: operator_image.ImageReport, image: operator_image.OciArchive
) -> None:
    config = image.config["config"]
    assert built.user == config["User"] == f"{RUNTIME_UID}:{RUNTIME_UID}"
    assert config["Entrypoint"] == ["/opt/venv/bin/baseline-operator", "run"]
    assert "Cmd" not in config
    environment = dict(variable.split("=", 1) for variable in config["Env"])
    assert environment["PYTHONDONTWRITEBYTECODE"] == "1"
    assert environment["HOME"] == "/tmp"  # noqa: S108 - the emptyDir
    assert environment["PATH"].startswith("/opt/venv/bin:")
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp"}
    # The project's labels and no others (buildah's own identity label is turned off).
    assert set(config["Labels"]) == set(stages()[-1].labels())
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert config["Labels"]["org.opencontainers.image.version"] == project["version"]
    assert image.reference == f"{operator_image.IMAGE_REPOSITORY}:{project['version']}"


def test_three_layers_base_account_and_virtualenv(
    built: operator_image.ImageReport, image: operator_image.OciArchive
) -> None:
    # The base; the runtime stage's RUN (the account, pip removed); its COPY of the virtualenv.
    assert len(built.layers) == len(image.manifest["layers"]) == 3
    print(operator_image.describe(built))  # noqa: T201 - the numbers the README quotes (-rP shows them)
    base, account, venv = image.manifest["layers"]
    names = {}
    for descriptor in (account, venv):
        with image.layer_tar(descriptor) as layer:
            names[descriptor["digest"]] = {member.name: member for member in layer}
    assert "etc/passwd" in names[account["digest"]]
    assert "usr/local/bin/.wh.pip" in names[account["digest"]]
    virtualenv = names[venv["digest"]]
    assert virtualenv, "the virtualenv layer"
    assert all(name.startswith("opt") for name in virtualenv)
    # Owned by root and writable by nobody else: UID 15555 can run the code but never change it.
    assert {(member.uid, member.gid) for member in virtualenv.values()} == {(0, 0)}
    assert not [name for name, member in virtualenv.items() if member.mode & 0o022 and not member.issym()]
    compiled = "opt/venv/lib/python3.11/site-packages/baseline_operator/__pycache__/cli.cpython-311.pyc"
    assert compiled in virtualenv, "bytecode is compiled at build time, never at run time"
    assert base["digest"] != account["digest"]


def test_no_build_time_mount_or_secret_is_left_in_a_layer(image: operator_image.OciArchive) -> None:
    # The host's CA bundle is mounted over the base's during RUN steps (a machine may reach PyPI through
    # a proxy of its own CA): it must stay the base's, in the base layer only.
    above_base = set()
    for descriptor in image.manifest["layers"][1:]:
        with image.layer_tar(descriptor) as layer:
            above_base |= {member.name.removeprefix("./") for member in layer}
    assert not {name for name in above_base if name.startswith(("etc/ssl", "etc/pip", "root/", "src/"))}
    assert not {name for name in above_base if name.startswith("wheels")}


def test_the_sbom_lists_every_locked_python_package_and_nothing_else(bom: dict[str, Any]) -> None:
    python = {
        sbom.normalized_name(c["name"]): c["version"]
        for c in bom["components"]
        if c.get("purl", "").startswith("pkg:pypi/")
    }
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    # Locked dependencies at their locked versions, the operator itself, and no installer (pip,
    # setuptools and wheel are gone from the runtime image).
    assert python == {**locked_packages(), project["name"]: project["version"]}


def test_the_sbom_lists_the_os_packages_the_image_has(
    bom: dict[str, Any], image: operator_image.OciArchive, built: operator_image.ImageReport
) -> None:
    status = sbom.image_files(image, lambda path: path == sbom.DPKG_STATUS)[sbom.DPKG_STATUS].decode()
    installed = {package["Package"]: package["Version"] for package in sbom.dpkg_packages(status)}
    debian = {c["name"]: c["version"] for c in bom["components"] if c.get("purl", "").startswith("pkg:deb/")}
    assert debian == installed
    assert {"python3.11", "libc6", "libssl3", "ca-certificates", "passwd"} <= set(debian)
    assert "python3-pip-whl" not in debian, "the base's hook purged the wheel it installed pip from"
    (system,) = [c for c in bom["components"] if c["type"] == "operating-system"]
    assert (system["name"], system["version"]) == ("debian", "12")
    assert built.sbom_components == {
        "deb": len(installed),
        "pypi": len(locked_packages()) + 1,
        "operating-system": 1,
    }
