"""The OCI archives the node imports: valid image layouts, named for containerd, the same on every run.

Pure file checks: no node, no root needed.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import TYPE_CHECKING

from localcluster import images

if TYPE_CHECKING:
    from pathlib import Path


def read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_an_archive_is_an_oci_layout_named_for_containerd(tmp_path: Path) -> None:
    script = tmp_path / "hello"
    script.write_bytes(b"#!/bin/sh\necho hello\n")
    image = images.binary_image("baseline.test/hello:2", script, path="/bin/hello", args=("--loud",))
    digest = images.write_oci_archive(image, tmp_path / "hello.tar")
    files = read_archive(tmp_path / "hello.tar")
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, blob in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(blob).hexdigest() == name.rsplit("/", 1)[1]
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["digest"] == digest
    assert entry["annotations"] == {
        "io.containerd.image.name": "baseline.test/hello:2",
        "org.opencontainers.image.ref.name": "2",
    }
    manifest = json.loads(files[f"blobs/sha256/{digest.split(':')[1]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["config"]["Entrypoint"] == ["/bin/hello", "--loud"]
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]
    with tarfile.open(fileobj=io.BytesIO(files[f"blobs/sha256/{layer['digest'].split(':')[1]}"])) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/hello"].mode == 0o755
    assert members["bin"].isdir()
    assert members["tmp"].mode == 0o1777
    assert {m.mtime for m in members.values()} == {0}


def test_the_same_files_make_the_same_image(tmp_path: Path) -> None:
    script = tmp_path / "hello"
    script.write_bytes(b"#!/bin/sh\n")
    image = images.binary_image("baseline.test/hello:1", script, path="/hello")
    first = images.write_oci_archive(image, tmp_path / "a.tar")
    second = images.write_oci_archive(image, tmp_path / "b.tar")
    assert first == second
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
