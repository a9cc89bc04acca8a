#!/usr/bin/env bash
# Makes sure a Redis answers on 127.0.0.1:6379 for the scaling tests: uses the one running, or
# starts one (installing Debian's redis-server first if the machine has none).
set -euo pipefail

answers() {  # PING over bash's /dev/tcp: needs no redis-cli
  exec 3<>/dev/tcp/127.0.0.1/6379 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  local line=""
  read -r -t 2 line <&3 || true
  exec 3>&-
  [[ "$line" == +PONG* ]]
}

if answers; then
  exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis: installing redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
mkdir -p /tmp/clarion-redis
echo "redis: starting redis-server on 127.0.0.1:6379"
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
  --dir /tmp/clarion-redis --logfile /tmp/clarion-redis/redis.log
for _ in $(seq 50); do
  answers && exit 0
  sleep 0.1
done
echo "redis: did not start; see /tmp/clarion-redis/redis.log" >&2
exit 1
