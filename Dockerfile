# Hearth's container image: llama-server compiled in a builder stage from the same pinned sources
# and CMake flags as `hearth setup` (hearth.engines.llama_cpp.flags, through Hearth's own build
# code), Hearth's wheel installed into a virtual environment, and a slim runtime stage that runs
# `hearth serve` as uid 10001 with its data dir on the /data volume. See docs/deployment.md
# ("Container image").
#
#   make image                                   # CPU, on python:3.11-slim-bookworm → hearth:local
#   make image BASE_IMAGE=debian:bookworm-slim   # any Debian/Ubuntu base: Python comes from apt
#   make image VARIANT=cuda                      # NVIDIA CUDA 12.8 (nvidia/cuda devel → runtime)
#
# Plain Dockerfile syntax only (no BuildKit-only features): the classic builder and BuildKit
# both build it. The classic builder builds every stage in order, so the variants are chosen by
# build arguments (base images, VARIANT), not by stages that would all be built.

# The runtime base. Any Debian or Ubuntu image with apt works: python3 (3.11 or newer) and
# libgomp1 are installed when it lacks them.
ARG BASE_IMAGE=python:3.11-slim-bookworm
# The builder's base: the runtime base by default (the virtual environment moves from one to
# the other, so both must have the same Python at the same path); for CUDA, the -devel image of
# the same CUDA release and distribution as the -runtime base.
ARG BUILDER_IMAGE=${BASE_IMAGE}


FROM ${BUILDER_IMAGE} AS builder

# cpu or cuda (llama.cpp built with -DGGML_CUDA=ON; needs an nvidia/cuda -devel builder image).
ARG VARIANT=cpu
# CMake flags added to Hearth's own (hearth.engines.llama_cpp.flags.CMAKE_FLAGS). The default
# builds for any x86-64 CPU with AVX2/FMA/F16C (2013 on) instead of -march=native, because an
# image runs on other machines than the one that built it. Empty: tuned to the build machine,
# exactly as `hearth setup` builds it.
ARG LLAMA_CMAKE_EXTRA=-DGGML_NATIVE=OFF
# CUDA only: GPU architectures to compile for (e.g. "89-real;90-real"); empty: ggml's default
# list (Maxwell to Blackwell, slower to build).
ARG CUDA_ARCHITECTURES=
# Compile jobs; empty: one per CPU.
ARG JOBS=
# Optional extras of the hearth package, e.g. "otel". Never test extras or torch.
ARG HEARTH_EXTRAS=
# pip's index, when PyPI itself is not the one to use (visible in `docker history`: no
# credentials in it).
ARG PIP_INDEX_URL
# PEM certificates the builder trusts besides the system's, for a network whose HTTPS goes
# through an intercepting proxy (pip would refuse PyPI's certificate). Builder stage only: the
# runtime image does not trust them.
ARG EXTRA_CA_CERTS=

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

# The toolchain, and Python with venv when the base has none (debian, ubuntu, nvidia/cuda).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends build-essential cmake ca-certificates; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/hearth-build-extra.crt; \
        update-ca-certificates; \
    fi; \
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
        apt-get install -y --no-install-recommends python3 python3-venv; \
    fi; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), "Hearth needs Python 3.11 or newer: pick a newer BASE_IMAGE"'; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/hearth

# llama-server first, from only the three modules that build it, so that no other change to
# Hearth compiles llama.cpp again (5 to 11 minutes on 2 cores). They import only the standard
# library, each other and hearth.errors.SetupError, which the RUN below stands in for with a
# one-line module (a new import among them shows up here as an ImportError).
COPY src/hearth/engines/llama_cpp/flags.py \
     src/hearth/engines/llama_cpp/build.py \
     src/hearth/engines/llama_cpp/locate.py \
     /build/hearth/engines/llama_cpp/

# Hearth's own build (ensure_llama_server: `pip download` of the pinned llama-cpp-python sdist,
# cmake with CMAKE_FLAGS, `llama-server --version` checked), with this image's flags appended to
# the one list that build.py and locate.py share. It runs in a throw-away venv holding the
# sdist's build backend, with pip's build isolation off: `pip download --no-binary :all:` would
# otherwise compile that backend and its own build dependencies from source first (11 minutes
# in a fresh container, before any of llama.cpp). Python before 3.11.4 (Debian 12's python3 is
# 3.11.2) has no tar extraction filters, which build.py asks for: there the archive (the pinned
# PyPI sdist) is unpacked without one.
RUN set -eu; \
    case "$VARIANT" in \
      cpu) extra="" ;; \
      cuda) \
        extra="-DGGML_CUDA=ON -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined"; \
        if [ -n "$CUDA_ARCHITECTURES" ]; then extra="$extra -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES"; fi; \
        mkdir -p /tmp/cuda-stubs; \
        ln -s /usr/local/cuda/lib64/stubs/libcuda.so /tmp/cuda-stubs/libcuda.so.1; \
        export LD_LIBRARY_PATH="/tmp/cuda-stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;; \
      *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 2 ;; \
    esac; \
    extra="$extra $LLAMA_CMAKE_EXTRA"; \
    touch /build/hearth/__init__.py /build/hearth/engines/__init__.py /build/hearth/engines/llama_cpp/__init__.py; \
    echo 'class SetupError(Exception): pass' > /build/hearth/errors.py; \
    echo "llama.cpp: Hearth's CMake flags plus:$extra"; \
    python3 -m venv /tmp/llama-venv; \
    /tmp/llama-venv/bin/pip install --quiet "scikit-build-core>=0.10"; \
    if ! PYTHONPATH=/build PIP_NO_BUILD_ISOLATION=0 /tmp/llama-venv/bin/python -c '\
import shlex, sys, tarfile; \
from pathlib import Path; \
hasattr(tarfile, "data_filter") or setattr(tarfile.TarFile, "extractall", (lambda extract: lambda self, path=".", members=None, *, numeric_owner=False, filter=None: extract(self, path, members, numeric_owner=numeric_owner))(tarfile.TarFile.extractall)); \
from hearth.engines.llama_cpp import flags; \
flags.CMAKE_FLAGS.extend(shlex.split(sys.argv[1])); \
from hearth.engines.llama_cpp.build import ensure_llama_server; \
seen = set(); \
report = lambda stage, pct: (stage, pct) in seen or seen.add((stage, pct)) or print(stage, "" if pct is None else f"{pct}%", flush=True); \
binary = ensure_llama_server(Path(sys.argv[2]), jobs=int(sys.argv[3]) if sys.argv[3] else None, progress=report); \
print("built", binary, "with", shlex.join(flags.CMAKE_FLAGS)); \
' "$extra" /tmp/tools "$JOBS"; then \
        tail -n 60 /tmp/tools/build/*.log >&2 || true; exit 1; \
    fi; \
    mkdir -p /opt/llama; \
    cp /tmp/tools/llama.cpp-*/bin/llama-server /tmp/tools/llama.cpp-*/bin/rpc-server /opt/llama/; \
    cp /tmp/tools/llama.cpp-*/build-info.json /opt/llama/build-info.json; \
    strip /opt/llama/llama-server /opt/llama/rpc-server; \
    rm -rf /tmp/tools /tmp/cuda-stubs /tmp/llama-venv

# Hearth's dependencies (from pyproject.toml alone: a source change keeps this layer), then its
# wheel.
COPY pyproject.toml README.md /src/
RUN set -eux; \
    /opt/hearth/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt; \
    /opt/hearth/bin/pip install -r /tmp/requirements.txt
COPY src /src/src
RUN set -eux; \
    /opt/hearth/bin/pip wheel --no-deps --wheel-dir /dist /src; \
    wheel="$(ls /dist/*.whl)"; \
    /opt/hearth/bin/pip install "${wheel}${HEARTH_EXTRAS:+[$HEARTH_EXTRAS]}"; \
    /opt/hearth/bin/hearth --version

# `hearth setup`, as on a host, with the engine just built: it leaves in its cache what the first
# start needs offline (the embeddings model's source wheel, downloaded alone), which the runtime
# image keeps in /var/cache/hearth. The models it writes here are thrown away: `hearth serve`
# writes them into the data volume at first start (a few seconds), as everywhere else.
RUN set -eux; \
    if [ "$VARIANT" = cuda ]; then \
        mkdir -p /tmp/cuda-stubs; \
        ln -s /usr/local/cuda/lib64/stubs/libcuda.so /tmp/cuda-stubs/libcuda.so.1; \
        export LD_LIBRARY_PATH="/tmp/cuda-stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; \
    fi; \
    mkdir -p /var/cache/hearth; \
    HEARTH_CACHE_DIR=/var/cache/hearth HEARTH_DATA_DIR=/tmp/setup-data \
        HEARTH_LLAMA_SERVER=/opt/llama/llama-server /opt/hearth/bin/hearth setup; \
    rm -rf /tmp/setup-data /tmp/cuda-stubs /var/cache/hearth/tools; \
    find /var/cache/hearth -type f


FROM ${BASE_IMAGE} AS runtime

ARG VARIANT=cpu

# Python (when the base has none) and llama-server's one shared library beyond libc/libstdc++;
# the user Hearth runs as, and its data dir.
RUN set -eux; \
    packages="libgomp1"; \
    command -v python3 >/dev/null || packages="$packages python3"; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --gid 10001 hearth; \
    useradd --uid 10001 --gid 10001 --create-home --home-dir /home/hearth --shell /usr/sbin/nologin hearth; \
    mkdir -p /data /etc/hearth; \
    chown 10001:10001 /data; \
    chmod 0750 /data

# Metadata before the large layers: a rebuild after a change to Hearth reuses these steps.
# llama-server is found on PATH (`hearth doctor` says so). HEARTH_HOST, HEARTH_DATA_DIR and
# HEARTH_CACHE_DIR are settings from the environment: they win over a mounted config file
# (docs/configuration.md); override them with -e. The cache is read-only at run time (see the
# builder's `hearth setup`). HF_HOME keeps `hearth pull`'s hub files on the volume as well.
ENV PATH=/opt/hearth/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEARTH_HOST=0.0.0.0 \
    HEARTH_DATA_DIR=/data \
    HEARTH_CACHE_DIR=/var/cache/hearth \
    HF_HOME=/data/huggingface

LABEL org.opencontainers.image.title="Hearth" \
      org.opencontainers.image.description="A self-hosted LLM server and gateway with an OpenAI-compatible API" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.hearth.variant="${VARIANT}"

VOLUME ["/data"]
EXPOSE 8080

# Liveness (the process answers). No curl in a slim image: Python's urllib. The port is
# HEARTH_PORT's (default 8080): set HEARTH_PORT, not only a config file's `port`, to move it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('HEARTH_PORT') or '8080'), timeout=4)"]

# Exec form: hearth is PID 1 and gets SIGTERM itself; uvicorn stops accepting, lets answers in
# progress finish for shutdown_drain seconds (60), ends the rest with error events, stops the
# engines and writes the usage buffer. Give `docker stop -t` more than shutdown_drain plus
# engine.shutdown_grace (10) — Docker's own default is 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["hearth"]
CMD ["serve"]

USER 10001:10001
WORKDIR /home/hearth

COPY --from=builder /opt/hearth /opt/hearth
COPY --from=builder /opt/llama/llama-server /opt/llama/rpc-server /usr/local/bin/
COPY --from=builder /opt/llama/build-info.json /usr/local/share/hearth/llama-server-build-info.json
COPY --from=builder /var/cache/hearth /var/cache/hearth

# The image runs what it ships, as its user (a missing library or an unreadable path fails the
# build, not the first start); a CUDA llama-server needs the driver, which only `docker run
# --gpus` brings.
RUN set -eux; \
    hearth --version; \
    if [ "$VARIANT" = cpu ]; then llama-server --version; fi
