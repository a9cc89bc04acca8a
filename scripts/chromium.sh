#!/usr/bin/env bash
# Makes sure Debian's Chromium is at /usr/bin/chromium for the browser tests (playwright-core
# drives it; no browser is downloaded). Quick when it is already there.
set -euo pipefail

[ -x /usr/bin/chromium ] && exit 0
command -v apt-get >/dev/null || { echo "chromium: /usr/bin/chromium is missing and apt-get is not available" >&2; exit 1; }
echo "chromium: installing Debian's chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq chromium >/dev/null
