#!/usr/bin/env bash
# Sets up everything the tests need, then runs every check: lint, types, unit, integration and
# compatibility tests with the real pusher-js, laravel-echo and the official pusher SDK.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --with-node
scripts/redis.sh

echo "== ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest "$@"
