#!/usr/bin/env bash
# The Vue client (clients/vue): types, the package build, Vitest (unit tests, and the
# @laravel/echo-vue example on both libraries), the integration tests against real `clarion serve`
# nodes and Redis, and the Chromium tests. Expects scripts/setup.sh --with-node and a Redis.
set -euo pipefail
cd "$(dirname "$0")/../clients/vue"

echo "== clients/vue: typecheck"
npm run --silent typecheck
echo "== clients/vue: build"
npm run --silent build >/dev/null
echo "== clients/vue: vitest (unit, drop-in on @laravel/echo-vue and on clarion-vue)"
npx vitest run
echo "== clients/vue: integration (node --test, real clarion serve and Redis)"
node --test --test-concurrency=1 test/integration/
echo "== clients/vue: browser (Chromium)"
node --test --test-concurrency=1 test/browser/
