#!/usr/bin/env bash
# Sets up and starts Clarion on embedded defaults (in-memory bus, the development app).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
exec .venv/bin/clarion serve "$@"
