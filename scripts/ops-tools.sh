#!/usr/bin/env bash
# Installs Debian's tools that check the operator's kit in deploy/: promtool and prometheus (package
# prometheus) for the alert rules and the dashboard's queries, nginx for the proxy config. Quick
# when they are already there.
set -euo pipefail

missing=()
{ command -v promtool && command -v prometheus; } >/dev/null || missing+=(prometheus)
command -v nginx >/dev/null || missing+=(nginx-light)
[ ${#missing[@]} -eq 0 ] && exit 0
command -v apt-get >/dev/null || { echo "ops-tools: ${missing[*]} missing and apt-get is not available" >&2; exit 1; }
echo "ops-tools: installing Debian's ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages only: no service is started here (policy-rc.d refuses it), the tests run the binaries.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
