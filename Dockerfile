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
# The project's dependencies and its `postgres` extra, read from pyproject.toml, without
# their bytecode (the server stage compiles what a server imports at start), their test
# suites or the debugging symbols of compiled modules that carry them; binutils comes and
# goes in this layer. Libraries that auditwheel patched (they have an RPATH) are left alone:
# stripping breaks them.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" > /tmp/requirements.txt \
    && pip install --no-compile -r /tmp/requirements.txt \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && find "$site" -depth -type d -name tests -exec rm -rf {} + \
    && apt-get update -q && apt-get install -y -q --no-install-recommends binutils \
    && find "$site" -name '*.so' -type f | while read -r so; do \
         if readelf -S "$so" | grep -q debug_info && ! readelf -d "$so" | grep -qE 'RPATH|RUNPATH'; then \
           strip --strip-debug "$so"; \
         fi; \
       done \
    && apt-get purge -y -q --auto-remove binutils && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log \
    && useradd --system --uid 10001 --home-dir /app fitwatch

FROM deps AS server
COPY README.md ./
COPY monitor_server ./monitor_server
COPY client_callbacks ./client_callbacks
COPY web ./web
RUN pip install --no-deps ".[postgres]" \
    && cd / && PYTHONDONTWRITEBYTECODE= python -c "import monitor_server.cli, monitor_server.app, monitor_server.migrations, uvicorn.main, uvicorn.protocols.http.httptools_impl, uvicorn.loops.uvloop, uvicorn.lifespan.on, sqlalchemy.dialects.postgresql.psycopg, monitor_server.store.postgres, alembic.command"

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
