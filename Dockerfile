# fitwatch server on PostgreSQL. The `demo` stage adds TensorFlow for the example training.
# Dependencies go in before the code: a change to the code rebuilds only the last layers.
FROM python:3.11-slim AS deps

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FITWATCH_PORT=8000

WORKDIR /app
COPY pyproject.toml ./
# The project's dependencies and its `postgres` extra, read from pyproject.toml. Then 40 MB
# less: the test suites that packages ship go, and so does the bytecode of plotly's Python
# side, which only the downloadable report uses (each server process compiles it then).
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && find "$site" -depth -type d \( -name tests -o -path '*/plotly/*/__pycache__' \) -exec rm -rf {} + \
    && useradd --system --uid 10001 --home-dir /app fitwatch

FROM deps AS server
COPY README.md ./
COPY monitor_server ./monitor_server
COPY client_callbacks ./client_callbacks
COPY web ./web
RUN pip install --no-deps ".[postgres]"

USER fitwatch
EXPOSE 8000
# Healthy once /healthz answers 200 (the database answers too). A bare socket: a check every
# 4 s costs about 20 ms of CPU.
HEALTHCHECK --interval=4s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, socket, sys; s = socket.create_connection(('127.0.0.1', int(os.environ.get('FITWATCH_PORT', 8000))), 2); s.sendall(b'GET /healthz HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n'); sys.exit(not s.recv(16).startswith(b'HTTP/1.1 200'))"]
CMD ["fitwatch", "serve", "--host", "0.0.0.0"]

FROM deps AS tensorflow
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['optional-dependencies']['tensorflow']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

FROM tensorflow AS demo
COPY --from=server /app /app
RUN pip install --no-deps ".[tensorflow]"
USER fitwatch
# /app is not writable by this user: undelivered records wait in /tmp.
ENV FITWATCH_SPOOL_DIR=/tmp/fitwatch-spool
CMD ["python", "-m", "client_callbacks.demo"]
