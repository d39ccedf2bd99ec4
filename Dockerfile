# One image for every role of the billing service: the API (default command), `billing worker`,
# `billing beat`, `billing flower` and `billing migrate`. Stage 1 builds the project and its
# dependencies into a virtualenv; the final stage copies only that virtualenv onto
# python:3.11-slim and runs as a non-root user, so no compiler, source tree or pip cache ships in
# the image. .dockerignore keeps the virtualenv, .git, caches and test logs out of the context.

FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the package is built from: the tests, the virtualenv and .git stay out of the image.
COPY pyproject.toml requirements.lock README.md celeryconfig.py ./
COPY billing/ billing/
COPY api/ api/
COPY tasks/ tasks/
COPY billing_client/ billing_client/
COPY bench/ bench/
COPY migrations/ migrations/
# A regular (not editable) install: the migrations package and the celeryconfig module
# are installed into site-packages, so every `billing` command works without /src.
# The pinned versions the tests passed with first, then the project itself without resolving again.
RUN pip install -r requirements.lock \
 && pip install --no-deps . \
 && billing --help >/dev/null \
 && python -c "import api, celeryconfig, migrations, tasks"


FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed uid and gid, so volume permissions can rely on them.
RUN groupadd --system --gid 10001 billing \
 && useradd --system --uid 10001 --gid billing --create-home --home-dir /home/billing \
      --shell /usr/sbin/nologin billing

COPY --from=builder /opt/venv /opt/venv

# Numeric, so a runtime that checks for non-root (Kubernetes' runAsNonRoot) can verify it.
USER 10001:10001
# gunicorn keeps its control socket under $HOME; the only other files written are the
# metrics samples, under /tmp (BILLING_METRICS_DIR, a tmpfs in docker-compose.yml).
WORKDIR /home/billing

# The API, Flower, and a worker's `--metrics-port` as docker-compose.yml uses them.
EXPOSE 8000 5555 9101
CMD ["billing", "api", "--host", "0.0.0.0"]
