#!/usr/bin/env bash
# Sets up everything the tests need (Python and Node packages, a Redis), then runs every check:
# lint, types, unit, contract, integration and compatibility tests with the real pusher-js,
# laravel-echo and the official pusher SDK; the Vue client's suites (scripts/test-vue.sh); then the
# integration and compatibility suites again with Redis scaling.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --with-node
scripts/redis.sh

echo "== ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest (embedded defaults: memory backend)"
.venv/bin/pytest "$@"
if [ $# -eq 0 ]; then
  scripts/test-vue.sh
  # The same protocol suites again with every server joined through Redis: the Redis twin must
  # behave exactly like the memory one (the contract suite already ran against both above).
  echo "== pytest (CLARION_SCALING=redis)"
  CLARION_SCALING=redis .venv/bin/pytest tests/integration tests/compat
fi
