from pathlib import Path

import pytest

from localcluster import binaries


def test_versions_come_from_the_go_build_modules() -> None:
    assert binaries.KUBERNETES.version().startswith("v1.")
    assert binaries.ETCD.version().startswith("v3.")


def test_kubernetes_binaries_are_stamped_with_their_release() -> None:
    flags = " ".join(binaries.KUBERNETES.ldflags())
    version = binaries.KUBERNETES.version()
    assert f"k8s.io/component-base/version.gitVersion={version}" in flags
    assert f"k8s.io/client-go/pkg/version.gitVersion={version}" in flags
    assert "gitMinor=" in flags


def test_cache_folder_is_outside_the_repository_and_keyed_by_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASELINE_CACHE_DIR", str(tmp_path))
    folder = binaries.KUBERNETES.cache_dir()
    assert folder.is_relative_to(tmp_path)
    assert binaries.KUBERNETES.version() in folder.name
    assert not folder.is_relative_to(binaries.REPO_ROOT)
