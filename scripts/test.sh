#!/usr/bin/env bash
# Install what is missing (Python deps, redis-server, chromium) and run the whole test suite.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -k presence
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --system --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
