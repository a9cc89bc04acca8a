#!/usr/bin/env bash
# Installs what Clarion and its tests need, from the committed lock files. Safe to re-run: each
# step is skipped while its lock file is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
want=$(stamp requirements.lock pyproject.toml)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages from requirements.lock"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
  echo "$want" > .venv/.setup-stamp
fi

if [ "${1:-}" = "--with-node" ]; then
  command -v npm >/dev/null || { echo "setup: npm is needed for the compatibility tests (Node 20+)" >&2; exit 1; }
  for dir in tests/compat/node clients/vue; do
    [ -f "$dir/package-lock.json" ] || continue
    want=$(stamp "$dir/package-lock.json")
    if [ "$(cat "$dir/node_modules/.setup-stamp" 2>/dev/null)" != "$want" ]; then
      echo "setup: installing Node packages in $dir"
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
      echo "$want" > "$dir/node_modules/.setup-stamp"
    fi
  done
  # clarion-vue's dist/ (used by its integration tests and by apps with a file: dependency on
  # it), rebuilt when a source is newer than the last build.
  if [ ! -f clients/vue/dist/clarion-vue.js ] || [ -n "$(find clients/vue/src -newer clients/vue/dist/clarion-vue.js -print -quit)" ]; then
    echo "setup: building clients/vue"
    (cd clients/vue && npm run --silent build >/dev/null)
  fi
  scripts/chromium.sh
fi
