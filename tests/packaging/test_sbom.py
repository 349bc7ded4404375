"""The SBOM writer (localcluster.sbom) on small images made here: layers, whiteouts, package records.

Pure file checks: no build, no root.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from typing import TYPE_CHECKING, Any

from localcluster import sbom
from localcluster.operator_image import OciArchive

if TYPE_CHECKING:
    from pathlib import Path

STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u14
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: passwd
Status: install ok installed
Architecture: amd64
Version: 1:4.13+dfsg1-1+deb12u2

Package: python3-pip-whl
Status: deinstall ok config-files
Architecture: all
Version: 23.0.1+dfsg-1
"""
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
SITE = "opt/venv/lib/python3.11/site-packages"
SYSTEM = "usr/local/lib/python3.11/dist-packages"


def metadata(name: str, version: str, licence: str | None = None) -> bytes:
    text = f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n"
    if licence:
        text += f"License-Expression: {licence}\n"
    return (text + "\nThe long description.\n").encode()


def layer(files: dict[str, bytes], *, compressed: bool = False) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    if compressed:
        return gzip.compress(blob, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
    return blob, "application/vnd.oci.image.layer.v1.tar"


def archive(path: Path, *layers: tuple[bytes, str], reference: str = "baseline.test/demo:1") -> Path:
    """An OCI archive of the given layers, in order, bottom first."""

    def digest(blob: bytes) -> str:
        return "sha256:" + hashlib.sha256(blob).hexdigest()

    config = json.dumps(
        {"created": "2026-01-02T03:04:05Z", "config": {"Labels": {"org.opencontainers.image.version": "1"}}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"digest": digest(config), "size": len(config)},
            "layers": [
                {"mediaType": kind, "digest": digest(blob), "size": len(blob)} for blob, kind in layers
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "digest": digest(manifest),
                    "size": len(manifest),
                    "annotations": {"org.opencontainers.image.ref.name": reference},
                }
            ],
        }
    ).encode()
    blobs = [config, manifest, *(blob for blob, _ in layers)]
    with tarfile.open(path, "w") as tar:
        for name, data in [
            ("index.json", index),
            *((f"blobs/sha256/{digest(b).removeprefix('sha256:')}", b) for b in blobs),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def components(bom: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        component["purl"].split("?")[0]: component for component in bom["components"] if "purl" in component
    }


def two_layer_image(tmp_path: Path) -> Path:
    base = layer(
        {
            "./var/lib/dpkg/status": STATUS.encode(),
            "./etc/os-release": OS_RELEASE.encode(),
            f"./{SYSTEM}/pip-23.0.1.dist-info/METADATA": metadata("pip", "23.0.1"),
            f"./{SYSTEM}/pip-23.0.1.dist-info/RECORD": b"",
        }
    )
    top = layer(
        {
            f"{SYSTEM}/.wh.pip-23.0.1.dist-info": b"",
            f"{SITE}/Foo_Bar-1.0.dist-info/METADATA": metadata("Foo_Bar", "1.0", "Apache-2.0"),
            f"{SITE}/baseline_operator-0.1.0.dist-info/METADATA": metadata("baseline-operator", "0.1.0"),
        },
        compressed=True,
    )
    return archive(tmp_path / "image.tar", base, top)


def test_lists_the_installed_debian_and_python_packages_of_the_final_file_system(tmp_path: Path) -> None:
    with OciArchive(two_layer_image(tmp_path)) as image:
        bom = sbom.cyclonedx(image)
    listed = components(bom)
    assert set(listed) == {
        # The epoch's colon and the `+` escaped, as the purl specification says.
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14",
        "pkg:deb/debian/passwd@1%3A4.13%2Bdfsg1-1%2Bdeb12u2",
        # PEP 503 names; pip is gone: a later layer removed it (the runtime stage's uninstall).
        "pkg:pypi/foo-bar@1.0",
        "pkg:pypi/baseline-operator@0.1.0",
    }, "python3-pip-whl's config files are no installed package"
    libc = listed["pkg:deb/debian/libc6@2.36-9%2Bdeb12u14"]
    assert libc["version"] == "2.36-9+deb12u14"
    assert libc["purl"].endswith("?arch=amd64&distro=debian-12")
    assert libc["properties"] == [{"name": "dpkg:source", "value": "glibc"}]
    assert listed["pkg:pypi/foo-bar@1.0"]["licenses"] == [{"expression": "Apache-2.0"}]
    assert listed["pkg:pypi/foo-bar@1.0"]["properties"] == [
        {"name": "location", "value": f"/{SITE}/Foo_Bar-1.0.dist-info"}
    ]
    (system,) = [c for c in bom["components"] if c["type"] == "operating-system"]
    assert (system["name"], system["version"]) == ("debian", "12")
    assert sbom.component_counts(bom) == {"deb": 2, "pypi": 2, "operating-system": 1}


def test_the_document_is_cyclonedx_and_the_same_for_the_same_image(tmp_path: Path) -> None:
    path = two_layer_image(tmp_path)
    with OciArchive(path) as image:
        first, second = sbom.cyclonedx(image), sbom.cyclonedx(image)
        digest = image.digest
    assert first == second
    assert (first["bomFormat"], first["specVersion"], first["version"]) == ("CycloneDX", "1.6", 1)
    assert str(first["serialNumber"]).startswith("urn:uuid:")
    metadata_ = first["metadata"]
    assert metadata_["timestamp"] == "2026-01-02T03:04:05Z"
    container = metadata_["component"]
    assert container["type"] == "container"
    assert container["version"] == digest
    assert container["name"] == "baseline.test/demo"
    assert container["purl"].startswith("pkg:oci/demo@sha256%3A")
    refs = [c["bom-ref"] for c in first["components"]]
    assert len(refs) == len(set(refs)), "bom-refs are unique"


def test_an_opaque_folder_hides_what_the_layers_below_had_there(tmp_path: Path) -> None:
    base = layer(
        {
            f"{SITE}/old-1.0.dist-info/METADATA": metadata("old", "1.0"),
            "var/lib/dpkg/status": STATUS.encode(),
        }
    )
    top = layer(
        {
            f"{SITE}/.wh..wh..opq": b"",
            f"{SITE}/new-2.0.dist-info/METADATA": metadata("new", "2.0"),
            "var/lib/dpkg/status": STATUS.split("\n\n", maxsplit=1)[0].encode() + b"\n",
        }
    )
    with OciArchive(archive(tmp_path / "image.tar", base, top)) as image:
        listed = components(sbom.cyclonedx(image))
    assert set(listed) == {"pkg:pypi/new@2.0", "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14"}


def test_dpkg_status_fields_continue_over_indented_lines() -> None:
    (libc, passwd) = sbom.dpkg_packages(STATUS)
    assert libc["Description"].endswith("\nthe system.")
    assert passwd["Version"] == "1:4.13+dfsg1-1+deb12u2"
