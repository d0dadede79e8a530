# recloop's image: the base_image of every KFP component and the KServe predictor's container
# (manifests/inferenceservice.yaml), so each pipeline step and the server run the same locked code.
#
#   docker build -t IMAGE_REGISTRY/recloop:TAG .
#
# Not built in CI (no docker engine there); tests/test_dockerfile.py lints it with hadolint and checks
# what hadolint cannot (stages, non-root user, frozen lock, nothing of the build in the final stage).

# The same Python as the dev machines and CI (3.11.7, Debian 12): the lock was resolved and tested on it.
# Both stages use it, so the venv's python symlink (/usr/local/bin/python3.11) resolves in the runtime stage.
FROM python:3.11.7-slim-bookworm AS builder

# uv from PyPI, the registry .ci/run installs it from; the version that wrote uv.lock
RUN pip install --no-cache-dir uv==0.13.9

# compile .pyc at build time (the runtime user cannot write them), copy instead of hard-linking from the
# cache mount, never download another Python: use the base image's
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/venv

WORKDIR /src

# dependencies first, from the lock alone: this ~2.6 GB layer is rebuilt only when the lock changes
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --no-editable

# then recloop itself, as a regular (not editable) install: the runtime stage has no /src
COPY README.md ./
COPY recloop ./recloop
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable


FROM python:3.11.7-slim-bookworm AS runtime

# a numeric, non-root user: Kubernetes' runAsNonRoot can verify a numeric UID without reading /etc/passwd
RUN groupadd --gid 10001 recloop \
    && useradd --uid 10001 --gid 10001 --no-log-init --create-home --home-dir /home/recloop \
       --shell /usr/sbin/nologin recloop

# only the venv: no uv, no pip cache, no sources
COPY --from=builder /opt/venv /opt/venv

# TF_USE_LEGACY_KERAS: TFRS 0.7.7 needs tf-keras 2, set before TensorFlow is first imported, also in the
# `python3 -m kfp.dsl.executor_main` of a lightweight component (which imports no recloop first).
# kfp 2.13 is in the venv (the lock) with pip: a component's `pip install kfp==2.13.0` finds it installed
# and downloads nothing (or set install_kfp_package=False on the component).
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    TF_USE_LEGACY_KERAS=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/recloop

USER 10001:10001
WORKDIR /home/recloop

# `recloop serve` binds 127.0.0.1 by default; in a container it must take --host 0.0.0.0 --port 8080 (the
# InferenceService passes both: KServe routes to 8080, and the pod's network namespace is its boundary)
EXPOSE 8080

# KFP and KServe set the container's command themselves; this is for `docker run IMAGE <subcommand>`
ENTRYPOINT ["recloop"]
CMD ["--help"]
