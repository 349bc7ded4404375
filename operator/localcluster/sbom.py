"""The operator image's SBOM: a CycloneDX document read from the image's own package records.

syft (github.com/anchore/syft) would write one too, but it is a large Go build for what the image itself
records: dpkg's status database lists every Debian package, and each Python distribution's `*.dist-info`
folder (PEP 376, core metadata) names the Python packages, in the virtualenv and anywhere else. Both are
read from the image's layers in order, whiteouts applied, so what a later layer removed (pip, which the
runtime stage uninstalls) is not listed: the SBOM describes the file system a container gets.

The document is deterministic: its serial number and timestamp come from the image's digest and
creation time, so the same image always has the same SBOM.
"""

from __future__ import annotations

import re
import uuid
from email.parser import HeaderParser
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Callable

    from localcluster.operator_image import OciArchive

DPKG_STATUS = "var/lib/dpkg/status"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_METADATA = re.compile(r"(?:^|/)(?:site|dist)-packages/[^/]+\.dist-info/METADATA$")
_OPAQUE = ".wh..wh..opq"
_WHITEOUT = ".wh."


def _wanted(path: str) -> bool:
    return path == DPKG_STATUS or path in OS_RELEASE or bool(_METADATA.search(path))


def image_files(image: OciArchive, wanted: Callable[[str], bool] = _wanted) -> dict[str, bytes]:
    """The regular files of the image's final file system for which `wanted(path)` holds, by path."""
    files: dict[str, bytes] = {}
    for descriptor in image.manifest["layers"]:
        added: dict[str, bytes] = {}
        removed: list[str] = []
        with image.layer_tar(descriptor) as layer:
            for member in layer:
                path = member.name.removeprefix("./").strip("/")
                folder, _, name = path.rpartition("/")
                if name == _OPAQUE:
                    # The folder's content in the layers below is hidden; this layer's own stays.
                    removed.append(f"{folder}/" if folder else "")
                elif name.startswith(_WHITEOUT):
                    hidden = f"{folder}/{name.removeprefix(_WHITEOUT)}" if folder else name[len(_WHITEOUT) :]
                    removed += [hidden, f"{hidden}/"]
                elif member.isfile() and wanted(path):
                    content = layer.extractfile(member)
                    if content is not None:
                        added[path] = content.read()
        for path in list(files):
            if any(
                path == prefix or (prefix.endswith("/") and path.startswith(prefix)) for prefix in removed
            ):
                del files[path]
        files.update(added)
    return files


def dpkg_packages(status: str) -> list[dict[str, str]]:
    """The installed packages of a dpkg status file, each as its fields (Package, Version...)."""
    packages = []
    for paragraph in status.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in paragraph.splitlines():
            if line[:1] in {" ", "\t"} and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages.append(fields)
    return packages


def python_distribution(metadata: str) -> dict[str, str]:
    """Name, version and licence of a distribution, from its core metadata (METADATA)."""
    headers = HeaderParser().parsestr(metadata)
    found = {"name": headers.get("Name", ""), "version": headers.get("Version", "")}
    if headers.get("License-Expression"):
        found["license"] = headers["License-Expression"]
    return found


def normalized_name(name: str) -> str:
    """A Python distribution name as PEP 503 and the pypi purl type compare it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _os_release(files: dict[str, bytes]) -> dict[str, str]:
    text = next((files[path].decode() for path in OS_RELEASE if path in files), "")
    fields = {}
    for line in text.splitlines():
        key, separator, value = line.partition("=")
        if separator:
            fields[key] = value.strip().strip('"')
    return fields


def cyclonedx(image: OciArchive) -> dict[str, Any]:
    """The image's SBOM as a CycloneDX 1.6 JSON document."""
    files = image_files(image)
    release = _os_release(files)
    distro = f"{release.get('ID', 'linux')}-{release.get('VERSION_ID', '')}"
    components: list[dict[str, Any]] = []
    if release:
        components.append(
            {
                "type": "operating-system",
                "bom-ref": f"os:{distro}",
                "name": release.get("ID", ""),
                "version": release.get("VERSION_ID", ""),
                "description": release.get("PRETTY_NAME", ""),
            }
        )
    status = files.get(DPKG_STATUS, b"").decode()
    for package in sorted(dpkg_packages(status), key=lambda fields: fields["Package"]):
        name, version = package["Package"], package.get("Version", "")
        architecture = package.get("Architecture", "")
        purl = f"pkg:deb/{release.get('ID', 'debian')}/{name}@{_purl_version(version)}"
        purl += f"?arch={architecture}&distro={distro}"
        component: dict[str, Any] = {
            "type": "library",
            "bom-ref": purl,
            "name": name,
            "version": version,
            "purl": purl,
        }
        if package.get("Maintainer"):
            component["publisher"] = package["Maintainer"]
        if package.get("Source"):
            component["properties"] = [{"name": "dpkg:source", "value": package["Source"]}]
        components.append(component)
    distributions = {}
    for path, metadata in files.items():
        if _METADATA.search(path):
            distribution = python_distribution(metadata.decode(errors="replace"))
            distributions[path] = distribution
    for path, distribution in sorted(
        distributions.items(), key=lambda item: normalized_name(item[1]["name"])
    ):
        purl = f"pkg:pypi/{normalized_name(distribution['name'])}@{_purl_version(distribution['version'])}"
        component = {
            "type": "library",
            "bom-ref": f"{purl}#{path.rsplit('/', 2)[0]}",
            "name": distribution["name"],
            "version": distribution["version"],
            "purl": purl,
            "properties": [{"name": "location", "value": "/" + path.rsplit("/", 1)[0]}],
        }
        if "license" in distribution:
            component["licenses"] = [{"expression": distribution["license"]}]
        components.append(component)
    repository, _, tag = image.reference.rpartition(":")
    name = repository.rsplit("/", 1)[-1]
    labels = image.config.get("config", {}).get("Labels") or {}
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'oci:{image.digest}')}",
        "version": 1,
        "metadata": {
            "timestamp": image.config.get("created", ""),
            "tools": {"components": [{"type": "application", "name": "localcluster.sbom"}]},
            "component": {
                "type": "container",
                "bom-ref": image.digest,
                "name": repository,
                "version": image.digest,
                "purl": f"pkg:oci/{name}@{quote(image.digest, safe='')}"
                f"?repository_url={repository}&tag={tag}",
                "properties": [{"name": key, "value": value} for key, value in sorted(labels.items())],
            },
        },
        "components": components,
    }


def _purl_version(version: str) -> str:
    # The purl specification's escaping: a Debian epoch's `:` and the `+` of `+deb12u1` are escaped.
    return quote(version, safe="~.-_")


def component_counts(bom: dict[str, Any]) -> dict[str, int]:
    """How many components of each purl type (deb, pypi) the document lists."""
    counts: dict[str, int] = {}
    for component in bom.get("components", []):
        purl = component.get("purl", "")
        kind = purl.removeprefix("pkg:").split("/", 1)[0] if purl else component.get("type", "")
        counts[kind] = counts.get(kind, 0) + 1
    return counts
