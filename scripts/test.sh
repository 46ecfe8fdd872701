#!/usr/bin/env bash
# Install what is missing (Python deps, redis-server, redis-sentinel, chromium) and run the whole test suite.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k presence
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --system --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# One pass, in asyncio's debug mode, with never-awaited coroutines and unraisable errors as
# failures (tests/conftest.py also fails a test whose background task lost an exception),
# and a coverage report at the end. Every test has a 300 s timeout (pyproject.toml).
# The whole run is also bounded (45 min, then TERM and KILL): a hang that holds the GIL stops
# even pytest-timeout's own thread.
export PYTHONASYNCIODEBUG=1
exec timeout --kill-after=30 2700 .venv/bin/python -m pytest -W error::RuntimeWarning \
  -W error::pytest.PytestUnraisableExceptionWarning --cov --cov-report=term "$@"
