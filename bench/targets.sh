#!/usr/bin/env bash
# The performance targets, each in one `clarion bench` run, on this machine; JSON per run in
# bench/results/ (gitignored), the table in docs/benchmarks.md. Every channel keeps history
# (CLARION_HISTORY=":100:300"): the figures hold with every protocol check on.
#
#   bash bench/targets.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/results
mkdir -p "$out"
export CLARION_HISTORY=":100:300"
bench() { local name=$1; shift; echo "== $name: clarion bench $*" >&2; .venv/bin/clarion bench "$@" --json > "$out/$name.json"; }

# Each side on a core of its own as well (server on CPU 0; load and subscribers on CPU 1), as on
# separate hosts: the same runs, with the scheduler's placement taken out.
pin=(--server-cpus 0 --client-cpus 1)
bench cpu-2000x20     --subscribers 2000  --rate 20  --duration 10 --compare baseline --rounds 3
bench cpu-2000x20-pinned --subscribers 2000 --rate 20 --duration 10 --compare baseline --rounds 3 "${pin[@]}"
bench p99-10000x1     --subscribers 10000 --rate 1   --duration 10
bench p99-10000x1-pinned --subscribers 10000 --rate 1 --duration 10 "${pin[@]}"
bench load-1000x200   --subscribers 1000  --rate 200 --duration 10 --http-concurrency 4 --compare baseline --rounds 1
bench rss-5000-idle   --subscribers 5000  --rate 0   --duration 5  --compare baseline --rounds 1
bench setup-5000      --subscribers 5000  --rate 0   --duration 5  --client-processes 2
.venv/bin/python - "$out" <<'PY'
import json, sys, pathlib
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    doc = json.loads(path.read_text())
    for label, run in (doc.get("summary") or {}).items():
        keys = ("delivered", "expected", "lost", "latency_p50_ms", "latency_p99_ms", "server_cpu_us_per_delivery",
                "server_rss_per_connection_bytes", "connect_rate_per_s", "rate_achieved")
        print(path.stem, label, {k: run.get(k) for k in keys})
    if doc.get("ratios"):
        print(path.stem, "ratios", doc["ratios"])
PY
