"""What `docker build` reads, modelled without Docker: the Dockerfile's stages and the build context.

No Docker engine runs where these tests run, so the tests read the Dockerfile the way the builder does
(line continuations, comments, stages) and compute the build context from `.dockerignore` with Docker's
rules: patterns in order, the last one that matches a path or one of its parent folders decides, `!`
re-includes, `*` and `?` stop at `/`, `**` crosses folders. Character classes are not supported: the
`.dockerignore` here does not use them, and a test fails if it starts to.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


@dataclass
class Stage:
    image: str
    """The base image, with the global build arguments' defaults substituted (what `docker build` pulls
    when no --build-arg is given)."""
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)
    written_image: str = ""
    """The base image as written in the FROM line, e.g. `${BASE_IMAGE}`."""

    def all(self, keyword: str) -> list[Instruction]:
        return [instruction for instruction in self.instructions if instruction.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The variables the stage's ENV instructions set (the `key=value` form)."""
        variables: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.arguments):
                key, separator, value = word.partition("=")
                if not separator:
                    raise ValueError(f"line {instruction.line}: use ENV key=value, not the legacy form")
                variables[key] = value
        return variables

    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = {}
        for instruction in self.all("LABEL"):
            for word in shlex.split(instruction.arguments):
                key, _, value = word.partition("=")
                labels[key] = value
        return labels


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Each instruction as one line with its starting line number; comments and blank lines dropped.

    As in Docker, a comment line inside a continued instruction is skipped, not the end of it.
    """
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        yield start, " ".join(part for part in pending if part)
        pending = []
    if pending:
        yield start, " ".join(pending)


_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def global_arguments(text: str) -> dict[str, str]:
    """The build arguments declared before the first FROM, with their defaults ("" when none)."""
    arguments: dict[str, str] = {}
    for _, content in logical_lines(text):
        keyword, _, rest = content.partition(" ")
        if keyword.upper() == "FROM":
            break
        if keyword.upper() == "ARG":
            key, _, value = rest.strip().partition("=")
            arguments[key] = value.strip().strip("\"'")
    return arguments


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    arguments = global_arguments(text)

    def substitute(match: re.Match[str]) -> str:
        variable = match["braced"] or match["bare"]
        if variable not in arguments:
            raise ValueError(f"FROM uses ${variable}, which no ARG before the first FROM declares")
        return arguments[variable]

    for line, content in logical_lines(text):
        keyword, _, rest = content.partition(" ")
        instruction = Instruction(keyword.upper(), rest.strip(), line)
        if instruction.keyword == "FROM":
            words = [word for word in rest.split() if not word.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=_VARIABLE.sub(substitute, words[0]), name=name, written_image=words[0]))
        elif not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {line}: {instruction.keyword} before the first FROM")
        else:
            stages[-1].instructions.append(instruction)
    return stages


def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    if "[" in pattern or "\\" in pattern:
        raise ValueError(f"unsupported .dockerignore pattern {pattern!r}: extend docker_inputs.py first")
    regex = ""
    position = 0
    while position < len(pattern):
        if pattern.startswith("**/", position):
            regex += "(?:.*/)?"
            position += 3
        elif pattern.startswith("**", position):
            regex += ".*"
            position += 2
        elif pattern[position] == "*":
            regex += "[^/]*"
            position += 1
        elif pattern[position] == "?":
            regex += "[^/]"
            position += 1
        else:
            regex += re.escape(pattern[position])
            position += 1
    return re.compile(regex)


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[bool, str, re.Pattern[str]], ...]  # (re-includes, pattern, its regex), in file order

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        rules: list[tuple[bool, str, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
            rules.append((include, pattern, _pattern_regex(pattern)))
        return cls(tuple(rules))

    def excludes(self, path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
        excluded = False
        for include, _, regex in self.rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                excluded = not include
        return excluded

    def context(self, root: Path) -> list[str]:
        """The files `docker build root` would send, as paths relative to root.

        A folder is not entered when it is excluded and no `!` rule could re-include anything in it;
        that keeps the walk away from .git and .venv.
        """
        files: list[str] = []
        for folder, subfolders, names in os.walk(root):
            relative = Path(folder).relative_to(root).as_posix()
            prefix = "" if relative == "." else f"{relative}/"
            subfolders[:] = sorted(name for name in subfolders if self._may_hold_context(prefix + name))
            files.extend(prefix + name for name in sorted(names) if not self.excludes(prefix + name))
        return files

    def _may_hold_context(self, folder: str) -> bool:
        if not self.excludes(folder):
            return True
        inside = folder + "/"
        for include, pattern, _ in self.rules:
            literal = re.split(r"[*?]", pattern, maxsplit=1)[0]
            if include and (inside.startswith(literal) or literal.startswith(inside)):
                return True
        return False


def dockerignore() -> DockerIgnore:
    return DockerIgnore.parse(DOCKERIGNORE.read_text())
