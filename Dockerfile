# syntax=docker/dockerfile:1
#
# One image for both Flowline services.
#
#   docker build -t flowline .
#   docker run -p 127.0.0.1:8000:8000 --env-file .env flowline                 # the API
#   docker run --env-file .env flowline python -m services.worker                 # a worker
#   docker run flowline python -m workflow_core.persistence.migrate               # migrations
#   docker run flowline python -m services.worker.healthcheck                     # its check
#   docker run -p 127.0.0.1:8025:8025 flowline python -m dev.mailcatcher --host 0.0.0.0
#   docker run flowline python -m services.api --version
#
# Settings come from the environment (see .env.example); docker-compose.yml runs the full stack.
# The version is the one in pyproject.toml (read from the installed package's metadata).

# --- build: resolve the locked dependencies and install the project into /app/.venv
FROM python:3.11-slim AS builder

ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

# Use the image's own Python (the runtime stage has the same one at the same path), compile
# bytecode once here, and copy files out of uv's cache (a cache mount cannot be hard-linked).
ENV UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /app

# Dependencies first, from the lock file alone: this layer is rebuilt only when they change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed as a regular (non-editable) package: the runtime stage
# needs the virtual environment only, not the source tree.
COPY README.md ./
COPY libs ./libs
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# --- runtime: the virtual environment, a non-root user, nothing else
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="flowline" \
      org.opencontainers.image.description="Flowline workflow service: API (default) and worker"

RUN groupadd --system --gid 10001 flowline \
    && useradd --system --uid 10001 --gid flowline --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin flowline

WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
# The catcher for emails and webhooks (`python -m dev.mailcatcher`, the Compose stack's
# "catcher"): plain modules run from /app; what they import is in the environment already.
COPY dev ./dev

# API_HOST: inside a container the API must listen on every interface to be reachable.
ENV PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    API_HOST=0.0.0.0 \
    API_PORT=8000

USER 10001:10001
EXPOSE 8000

# Exec form: Python is PID 1 and receives SIGTERM itself, so both services shut down cleanly.
CMD ["python", "-m", "services.api"]
