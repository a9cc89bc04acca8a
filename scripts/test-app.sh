#!/usr/bin/env bash
# The reference app's browser client (examples/categories/web): its types, and its end-to-end
# tests in Chromium against a real `clarion serve` and the real app. Expects scripts/setup.sh
# --with-node (Node packages, the SPA built, Debian's chromium). The app's backend tests are
# pytest's (tests/app), in the main run.
set -euo pipefail
cd "$(dirname "$0")/../examples/categories/web"

echo "== examples/categories/web: typecheck"
npm run --silent typecheck
echo "== examples/categories/web: end to end (Chromium)"
node --test --test-concurrency=1 e2e/
