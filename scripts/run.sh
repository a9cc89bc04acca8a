#!/usr/bin/env bash
# Sets up and starts the reference app on embedded defaults: Clarion on 127.0.0.1:6001 (memory
# bus, the development app) and the categories app on http://127.0.0.1:8000 (SQLite, the
# in-process broadcast queue), with its demo data on first run. Ctrl-C stops both.
# Clarion alone: .venv/bin/clarion serve (README, "Running it").
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --app
exec .venv/bin/python examples/categories/launch.py "$@"
