"""The tests' own library, imported by the test modules and the conftest files (which hold
only fixtures and hooks):

- `api`: the error-shape check, record builders and readers over the HTTP API.
- `containers`: the Docker images and containers of tests/docker (and bench/image.py).
- `databases`: the PostgreSQL test database, its backends and cleaning.
- `pages`: the Chromium the page tests drive, and the page-error watch.
- `servers`: a real server in a thread (`serve`) or as its own process (`ServerProcess`),
  free ports, and a webhook `Receiver`.
- `training`: a tiny Keras model on synthetic data, callbacks that act at a given step, and
  programs written out to run as their own process.
- `waiting`: `wait_for`, the one way a test waits for something.
- `programs`, `trainer`: real trainings run as their own process (`python -m tests.support.programs`,
  `python -m tests.support.trainer`).
"""
