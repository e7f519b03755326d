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
# Smaller by 40 MB: the test suites that packages ship go, and so does the bytecode of
# plotly's Python side, which only the downloadable report uses (compiled when it is made).
RUN pip install ".[postgres]" \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && find "$site" -depth -type d \( -name tests -o -path '*/plotly/*/__pycache__' \) -exec rm -rf {} + \
    && useradd --system --uid 10001 --home-dir /app fitwatch

USER fitwatch
EXPOSE 8000
# Healthy once /healthz answers 200 (the database answers too). A bare socket: a check every
# 4 s costs about 20 ms of CPU.
HEALTHCHECK --interval=4s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, socket, sys; s = socket.create_connection(('127.0.0.1', int(os.environ.get('FITWATCH_PORT', 8000))), 2); s.sendall(b'GET /healthz HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n'); sys.exit(not s.recv(16).startswith(b'HTTP/1.1 200'))"]
CMD ["fitwatch", "serve", "--host", "0.0.0.0"]

FROM server AS demo
USER root
RUN pip install ".[tensorflow]"
USER fitwatch
# /app is not writable by this user: undelivered records wait in /tmp.
ENV FITWATCH_SPOOL_DIR=/tmp/fitwatch-spool
CMD ["python", "-m", "client_callbacks.demo"]
