"""The packaging tier: the Dockerfile, the wheel and the lock files as files; the image as built.

The image's tests need it built (root, Debian's mmdebstrap and buildah). `make test` builds it first;
otherwise it is built here, before the first test and outside any test's timeout, when the machine can
(a cold build takes about two minutes). Where it cannot, those tests skip and say why.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from localcluster import operator_image

if TYPE_CHECKING:
    import pytest

IMAGE_TESTS = str(Path(__file__).parent / "test_image.py")


def pytest_collection_finish(session: pytest.Session) -> None:
    runs_them = any(str(item.path) == IMAGE_TESTS for item in session.items)
    if runs_them and not operator_image.missing_prerequisites():
        with contextlib.suppress(operator_image.ImageBuildError):  # the tests' fixture says why
            operator_image.ensure_image()
