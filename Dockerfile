# fitwatch server on PostgreSQL. The `demo` stage adds TensorFlow for the example training.
FROM python:3.11-slim AS server

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FITWATCH_PORT=8000

WORKDIR /app
COPY pyproject.toml README.md ./
COPY monitor_server ./monitor_server
COPY client_callbacks ./client_callbacks
COPY web ./web
RUN pip install ".[postgres]" \
    && useradd --system --uid 10001 --home-dir /app fitwatch

USER fitwatch
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["fitwatch", "serve", "--host", "0.0.0.0"]

FROM server AS demo
USER root
RUN pip install ".[tensorflow]"
USER fitwatch
# /app is not writable by this user: undelivered records wait in /tmp.
ENV FITWATCH_SPOOL_DIR=/tmp/fitwatch-spool
CMD ["python", "-m", "client_callbacks.demo"]
