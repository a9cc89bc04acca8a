#!/usr/bin/env bash
# Installs what Clarion and its tests need, from the committed lock files. Safe to re-run: each
# step is skipped while its lock file is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# The native fan-out must build here (setup.py): without a C compiler the install fails now, not
# a test later. CLARION_REQUIRE_NATIVE=0 installs without it (Clarion then fans out in Python).
export CLARION_REQUIRE_NATIVE=${CLARION_REQUIRE_NATIVE:-1}
stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
want=$(stamp requirements.lock pyproject.toml setup.py src/clarion/_fanout.c)-native$CLARION_REQUIRE_NATIVE
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages from requirements.lock"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
  echo "$want" > .venv/.setup-stamp
fi

node_install() {  # npm ci in $1 when its lock file changed since the last install
  local dir=$1 want
  want=$(stamp "$dir/package-lock.json")
  if [ "$(cat "$dir/node_modules/.setup-stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Node packages in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$dir/node_modules/.setup-stamp"
  fi
}

build_vue() {
  # clarion-vue's dist/ (used by its integration tests and by apps with a file: dependency on
  # it), rebuilt when a source is newer than the last build.
  if [ ! -f clients/vue/dist/clarion-vue.js ] || [ -n "$(find clients/vue/src -newer clients/vue/dist/clarion-vue.js -print -quit)" ]; then
    echo "setup: building clients/vue"
    (cd clients/vue && npm run --silent build >/dev/null)
  fi
}

build_app() {
  # The reference app's SPA (examples/categories/web), on clarion-vue's dist/; rebuilt when one of
  # its sources or clarion-vue's build is newer than the last build.
  local web=examples/categories/web
  node_install "$web"
  if [ ! -f "$web/dist/index.html" ] || [ -n "$(find "$web/src" "$web/index.html" "$web/vite.config.ts" \
      "$web/package-lock.json" clients/vue/dist/clarion-vue.js -newer "$web/dist/index.html" -print -quit)" ]; then
    echo "setup: building the reference app's web client"
    (cd "$web" && npm run --silent build >/dev/null)
  fi
}

if [ "${1:-}" = "--app" ]; then
  command -v npm >/dev/null || { echo "setup: npm is needed to build the reference app's web client (Node 20+)" >&2; exit 1; }
  node_install clients/vue
  build_vue
  build_app
fi

if [ "${1:-}" = "--with-node" ]; then
  command -v npm >/dev/null || { echo "setup: npm is needed for the compatibility tests (Node 20+)" >&2; exit 1; }
  for dir in tests/compat/node tests/browser clients/vue deploy/grafana/schema-check; do
    node_install "$dir"
  done
  build_vue
  build_app  # the reference app's end-to-end tests drive its built SPA
  scripts/chromium.sh
  scripts/ops-tools.sh  # promtool and nginx, which check the kit in deploy/
fi
