#!/usr/bin/env bash
# Install (first run only) and start the server: ./scripts/serve.sh [orbridge serve flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/orbridge serve "$@"
