# Coalmine: web process by default; run the worker with `docker run IMAGE coalmine worker`.
FROM python:3.11-slim

ARG KUBECTL_PACKAGE=kubernetes-client
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates ${KUBECTL_PACKAGE} \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 coalmine
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY config ./config
RUN pip install --no-cache-dir .

USER coalmine
ENV COALMINE_DATA_DIR=/home/coalmine/data PORT=8000 PYTHONUNBUFFERED=1
EXPOSE 8000
# `coalmine serve` checks the settings first (one clear line on a mistake), runs one gunicorn
# worker when there is no REDIS_URL (the embedded queue cannot be split across processes) and
# prepares the shared metrics directory for several workers otherwise.
CMD ["coalmine", "serve"]
