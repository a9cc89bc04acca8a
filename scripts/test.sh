#!/usr/bin/env bash
# Sets up everything the tests need (Python and Node packages, a Redis), then runs every check:
# lint, types, unit, contract, integration and compatibility tests with the real pusher-js,
# laravel-echo and the official pusher SDK; the Vue client's suites (scripts/test-vue.sh); the
# reference app's end-to-end tests in Chromium (scripts/test-app.sh; its backend tests are in the
# pytest run); the dashboard in Chromium (tests/browser); then the integration and compatibility
# suites again with Redis scaling.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --with-node
scripts/redis.sh

echo "== ruff"
.venv/bin/ruff check src tests bench examples deploy
.venv/bin/ruff format --check src tests bench examples deploy
# mypy checks the files pyproject.toml lists: src/, the reference app, bench/ and the drills strictly; tests/
# too, where test functions need no annotations but their bodies are checked.
echo "== mypy"
.venv/bin/mypy
# Tests are independent (free ports, their own Redis prefixes), so they run in parallel: most of
# their time is spent waiting on servers and sockets, not on the two cores.
WORKERS=${CLARION_TEST_WORKERS:-4}
if [ $# -eq 0 ]; then
  echo "== pytest (embedded defaults: memory backend), with coverage"
  .venv/bin/pytest -n "$WORKERS" --cov --cov-report=term
  scripts/test-vue.sh
  scripts/test-app.sh
  echo "== the dashboard in Chromium (screenshot in tests/browser/artifacts/)"
  (cd tests/browser && node --test --test-concurrency=1 .)
  # The same protocol suites again with every server joined through Redis: the Redis twin must
  # behave exactly like the memory one (the contract suite already ran against both above).
  echo "== pytest (CLARION_SCALING=redis)"
  CLARION_SCALING=redis .venv/bin/pytest -n "$WORKERS" tests/integration tests/compat
else
  .venv/bin/pytest "$@"
fi
