# The baseline-operator image. Build it from the repository root:
#
#   docker build -t baseline-operator:0.1.0 .
#
# or, without Docker, `make image` (buildah, with a base image made of Debian's own packages passed as
# BASE_IMAGE; see operator/localcluster/operator_image.py).
#
# The builder stage installs the locked dependencies (requirements/runtime.txt: every version and hash
# pinned, `pip install --require-hashes`) and the project's wheel into a virtualenv; the runtime stage
# receives that virtualenv and nothing else from the build context. Both stages start from the same image,
# so the virtualenv's interpreter link (/usr/local/bin/python) and its site-packages path
# (/opt/venv/lib/python3.11) are valid unchanged in the runtime stage.
#
# The image runs as UID/GID 15555 (the Deployment's runAsUser/runAsGroup) and writes nothing at run time:
# bytecode is compiled here and PYTHONDONTWRITEBYTECODE keeps the interpreter from trying, so the root
# filesystem can be mounted read-only with an emptyDir on /tmp (also HOME) for anything a library writes.

# Base image: the official Python 3.11 image on Debian 12 (bookworm), slim variant; 3.11 is the Python the
# tests and mypy target. The digest is the multi-architecture index of python:3.11.14-slim-bookworm as
# pinned by several unrelated public projects' Dockerfiles (found by searching public source code). It was
# not pulled or verified where this file was written, which had no registry access. To refresh it, take
# the newest 3.11 patch tag and run
#   crane digest python:3.11.<patch>-slim-bookworm
# or `docker buildx imagetools inspect python:3.11.<patch>-slim-bookworm` (the Digest line at the top).
# One argument names the base of both stages, so they cannot disagree (tests/packaging checks the default
# is pinned). A replacement must offer what this image does: `python` and `pip` on PATH (pip installed by
# pip, not by the distribution: the runtime stage uninstalls it), Python 3.11 at /usr/local/bin/python.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src

# The locked dependencies first, in a layer of their own: a change to the operator's sources alone then
# rebuilds from the wheel on and downloads nothing again. The virtualenv gets neither pip nor setuptools:
# the builder's pip installs into it from outside, and the runtime needs no installer.
COPY requirements/runtime.txt requirements/
RUN python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-cache-dir --no-compile --require-hashes \
        -r requirements/runtime.txt

# Bytecode is compiled with hash-based, unchecked invalidation so that the interpreter never compares
# timestamps (which COPY need not preserve) and never recompiles.
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && pip --python /opt/venv/bin/python install --no-cache-dir --no-compile --no-deps /wheels/*.whl \
    && /opt/venv/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/venv/lib


FROM ${BASE_IMAGE} AS runtime

# Where the source lives and which commit was built, when known: pass them with --build-arg.
ARG SOURCE_URL=""
ARG REVISION=""
LABEL org.opencontainers.image.title="baseline-operator" \
      org.opencontainers.image.description="Keeps every selected Kubernetes namespace at its declared SecurityBaseline." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}"

# A named account for the fixed numeric identity, so that tools resolving the UID find one. Its home is
# /tmp, the one writable path. --no-log-init keeps a high UID from growing the sparse lastlog file.
# The base image's own installers go too: the operator never installs anything, and image scanners then
# report only what the operator runs.
RUN groupadd --system --gid 15555 baseline-operator \
    && useradd --system --no-log-init --uid 15555 --gid 15555 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin baseline-operator \
    && python -B -m pip uninstall --yes --quiet pip setuptools wheel

# Owned by root: the operator's account can read and run the code but never change it.
COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

USER 15555:15555

# The command line's defaults: Prometheus /metrics on 8080 (--metrics-address, BASELINE_METRICS_ADDRESS)
# and kopf's liveness endpoint http://0.0.0.0:8081/healthz (--liveness, BASELINE_LIVENESS).
EXPOSE 8080 8081

ENTRYPOINT ["/opt/venv/bin/baseline-operator", "run"]
