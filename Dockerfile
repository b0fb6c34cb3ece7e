# Coalmine: the web process by default; the worker with `docker run IMAGE coalmine worker`.
#
# Two stages. `build` installs the Python packages into /opt/venv, exactly the versions in
# constraints.txt (what the test suite ran with, written by .ci/constraints), and downloads
# kubectl, checked against its published SHA-256. The final stage copies those two onto the
# same base with git (mirrors, worktrees and reverts run it) and nothing else: no compiler, no
# curl, no pip cache.

# python:3.11.13-slim-bookworm, pinned by the digest of its multi-platform manifest list.
# To move to a newer base: `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS build
# kubectl (with its built-in kustomize) renders the apps' kustomizations: Debian's package is
# too old for `labels` and `components`. Another version needs its two checksums, from
# https://dl.k8s.io/release/<version>/bin/linux/<arch>/kubectl.sha256
ARG KUBECTL_VERSION=v1.34.1
ARG KUBECTL_SHA256_AMD64=7721f265e18709862655affba5343e85e1980639395d5754473dafaadcaa69e3
ARG KUBECTL_SHA256_ARM64=420e6110e3ba7ee5a3927b5af868d18df17aae36b720529ffa4e9e945aa95450
ARG TARGETARCH=amd64
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN set -eu; \
    case "${TARGETARCH}" in \
      amd64) sum="${KUBECTL_SHA256_AMD64}" ;; \
      arm64) sum="${KUBECTL_SHA256_ARM64}" ;; \
      *) echo "no kubectl checksum for ${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    curl -fsSL --retry 3 -o /usr/local/bin/kubectl \
      "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl"; \
    echo "${sum}  /usr/local/bin/kubectl" | sha256sum -c -; \
    chmod 0755 /usr/local/bin/kubectl; \
    kubectl version --client

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# The dependencies first, in their own layer: it is rebuilt only when constraints.txt changes.
COPY constraints.txt ./
RUN /opt/venv/bin/pip install -r constraints.txt
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
RUN /opt/venv/bin/pip install --no-deps . && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A numeric user, so that Kubernetes' runAsNonRoot can check it (deploy/ runs as 10001 too).
RUN groupadd --gid 10001 coalmine \
 && useradd --create-home --uid 10001 --gid 10001 coalmine
COPY --from=build /opt/venv /opt/venv
COPY --from=build /usr/local/bin/kubectl /usr/local/bin/kubectl
WORKDIR /app
COPY config ./config

USER 10001:10001
ENV PATH=/opt/venv/bin:$PATH COALMINE_DATA_DIR=/home/coalmine/data PORT=8000 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
# Whichever process the container runs: the web's /livez, or the worker's heartbeat in Redis
# (bot/probes.py). Kubernetes ignores this and uses the probes in deploy/.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "-m", "bot.probes"]
# `coalmine serve` checks the settings first (one clear line on a mistake), runs one gunicorn
# worker when there is no REDIS_URL (the embedded queue cannot be split across processes) and
# prepares the shared metrics directory for several workers otherwise.
CMD ["coalmine", "serve"]
