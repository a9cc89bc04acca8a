"""Figures from one run's raw results, the JSON document, and the plain-text table.

Accounting (nothing is hidden):

- ``expected`` = for every event the API accepted (HTTP 200), the subscribers subscribed to its
  channel when the load began; a subscriber that disconnects later still counts, so what it misses
  is ``lost``.
- ``delivered`` = first deliveries of accepted events to the right socket. ``lost`` = expected -
  delivered. ``duplicates`` = an event seen again on the same socket. ``unexpected`` = deliveries of
  events the API did not accept, on the wrong channel, or out of range.
- Latency percentiles use the first delivery of each event on each socket (nearest rank). Past
  ``max_samples`` deliveries the workers keep an even 1 in 2, 4, ... of them; max and mean always
  count every delivery.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .load import LoadResult
from .subscribers import ConnectReport, WorkerResult

SCHEMA_VERSION = 1

# The figures compared between Clarion and the baseline: name -> what a ratio above 1 means.
RATIO_KEYS = {
    "server_cpu_us_per_delivery": "Clarion uses more CPU per delivery",
    "latency_p50_ms": "Clarion is slower (median)",
    "latency_p99_ms": "Clarion is slower (p99)",
    "server_rss_per_connection_bytes": "Clarion uses more memory per connection",
    "connect_rate_per_s": "Clarion accepts connections faster",
}

# Summary keys: the median over a label's runs, or (for counts) their sum.
MEDIAN_KEYS = (
    "subscribers",
    "connect_rate_per_s",
    "rate_achieved",
    "deliveries_per_s",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "server_cpu_us_per_delivery",
    "server_rss_per_connection_bytes",
)
SUM_KEYS = (
    "connect_failures",
    "events_accepted",
    "events_failed",
    "expected",
    "delivered",
    "lost",
    "duplicates",
    "unexpected",
    "disconnects",
)


@dataclass
class ServerFigures:
    pid: int
    processes: int = 0
    rss_before: int = 0  # bytes, before any subscriber connected
    rss_connected: int = 0  # bytes, with every subscriber connected and idle
    cpu_seconds: float | None = None  # during the load phase (trigger and drain)
    cpus: list[int] | None = None  # the CPUs its processes may run on


@dataclass
class RunData:
    label: str
    round: int
    url: str
    subscribers_requested: int
    channels: list[str]
    rate: float
    duration: float
    connects: list[ConnectReport]
    load: LoadResult
    workers: list[WorkerResult]
    server: ServerFigures | None = None
    drain_seconds: float = 0.0
    # Filled by analyse():
    samples: list[float] = field(default_factory=list)  # sorted latency samples, ms
    timeline: list[dict[str, Any]] = field(default_factory=list)


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def _samples(workers: list[WorkerResult]) -> tuple[array[float], array[int]]:
    """Every worker's samples, thinned to the coarsest stride so each sample weighs the same."""
    stride = max((w.stride for w in workers), default=1)
    latencies: array[float] = array("f")
    seqs: array[int] = array("I")
    for worker in workers:
        step = stride // worker.stride
        lat = array("f")
        lat.frombytes(worker.latencies)
        seq = array("I")
        seq.frombytes(worker.latency_seqs)
        latencies.extend(lat[::step])
        seqs.extend(seq[::step])
    return latencies, seqs


def analyse(data: RunData) -> dict[str, Any]:
    """The run's row (flat JSON object); also fills ``data.samples`` and ``data.timeline``."""
    load = data.load
    subscribed: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for report in data.connects:
        subscribed.update(report.subscribed)
        failures.update(report.failures)
    total_subscribed = sum(subscribed.values())
    if data.connects:
        connect_seconds = max(r.finished for r in data.connects) - min(r.started for r in data.connects)
    else:
        connect_seconds = 0.0
    setup: list[float] = []
    for worker in data.workers:
        part = array("f")
        part.frombytes(worker.setup_ms)
        setup.extend(part)
    setup.sort()

    # Deliveries per event, summed over the workers.
    n = len(load.accepted)
    counts = [0] * n
    for worker in data.workers:
        per_seq = array("I")
        per_seq.frombytes(worker.seq_counts)
        for seq, got in enumerate(per_seq[:n]):
            if got:
                counts[seq] += got
    channels = data.channels
    expected = delivered = unexpected = 0
    accepted_per_channel: Counter[str] = Counter()
    for seq in range(n):
        got = counts[seq]
        if load.accepted[seq]:
            channel = channels[seq % len(channels)]
            accepted_per_channel[channel] += 1
            want = subscribed[channel]
            expected += want
            delivered += min(got, want)
            unexpected += max(0, got - want)
        else:
            unexpected += got
    received = sum(w.received for w in data.workers)
    duplicates = sum(w.duplicates for w in data.workers)
    unexpected += sum(w.misrouted + w.foreign for w in data.workers)
    disconnects = sum(w.disconnects for w in data.workers)
    close_codes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for worker in data.workers:
        close_codes.update(worker.close_codes)
        errors.update(worker.errors)

    latencies, seqs = _samples(data.workers)
    ordered = sorted(latencies)
    data.samples = ordered
    first = sum(w.first_deliveries for w in data.workers)
    mean = sum(w.latency_sum_ms for w in data.workers) / first if first else None
    max_ms = max((w.latency_max_ms for w in data.workers), default=0.0) if first else None

    # Percentiles per 1-second window of send time.
    windows: dict[int, list[float]] = {}
    for latency, seq in zip(latencies, seqs, strict=True):
        if seq < n and load.sent_at[seq]:
            windows.setdefault(int(load.sent_at[seq] - load.started), []).append(latency)
    timeline = []
    for second in sorted(windows):
        values = sorted(windows[second])
        timeline.append(
            {
                "second": second,
                "samples": len(values),
                "p50_ms": _r(percentile(values, 50)),
                "p99_ms": _r(percentile(values, 99)),
                "max_ms": _r(values[-1]),
            }
        )
    data.timeline = timeline

    api = sorted(load.api_ms)
    accepted = load.accepted_count
    row: dict[str, Any] = {
        "label": data.label,
        "round": data.round,
        "url": data.url,
        "subscribers_requested": data.subscribers_requested,
        "subscribers": total_subscribed,
        "channels": len(channels),
        "connect_failures": sum(failures.values()),
        "connect_errors": dict(failures),
        "connect_seconds": _r(connect_seconds),
        "connect_rate_per_s": _r(total_subscribed / connect_seconds, 1) if connect_seconds > 0 else None,
        "connect_p50_ms": _r(percentile(setup, 50)),
        "connect_p99_ms": _r(percentile(setup, 99)),
        "rate_requested": data.rate,
        "duration_s": data.duration,
        "events_requested": int(data.rate * data.duration),
        "events_sent": load.sent,
        "events_accepted": accepted,
        "events_failed": sum(load.errors.values()),
        "api_errors": dict(load.errors),
        "api_first_error": load.first_error or None,
        "rate_achieved": _r(accepted / data.duration, 2) if data.duration > 0 else None,
        "api_p50_ms": _r(percentile(api, 50)),
        "api_p99_ms": _r(percentile(api, 99)),
        "expected": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "received": received,
        "disconnects": disconnects,
        "disconnect_codes": dict(close_codes),
        "pusher_errors": dict(errors),
        "deliveries_per_s": _r(delivered / data.duration, 1) if data.duration > 0 else None,
        "drain_s": _r(data.drain_seconds),
        "latency_p50_ms": _r(percentile(ordered, 50)),
        "latency_p95_ms": _r(percentile(ordered, 95)),
        "latency_p99_ms": _r(percentile(ordered, 99)),
        "latency_max_ms": _r(max_ms),
        "latency_mean_ms": _r(mean),
        "latency_samples": len(ordered),
        "client_cpus": sorted({cpu for report in data.connects for cpu in report.cpus}) or None,
        "server_pid": None,
        "server_cpus": None,
        "server_processes": None,
        "server_rss_before_bytes": None,
        "server_rss_connected_bytes": None,
        "server_rss_per_connection_bytes": None,
        "server_cpu_seconds": None,
        "server_cpu_us_per_delivery": None,
        "timeline": timeline,
    }
    server = data.server
    if server is not None:
        row["server_pid"] = server.pid
        row["server_cpus"] = server.cpus
        row["server_processes"] = server.processes
        row["server_rss_before_bytes"] = server.rss_before
        row["server_rss_connected_bytes"] = server.rss_connected
        if total_subscribed:
            grown = server.rss_connected - server.rss_before
            row["server_rss_per_connection_bytes"] = _r(grown / total_subscribed, 1)
        if server.cpu_seconds is not None:
            row["server_cpu_seconds"] = _r(server.cpu_seconds, 4)
            if received:
                row["server_cpu_us_per_delivery"] = _r(server.cpu_seconds / received * 1e6)
    row["ok"] = clean(row)
    return row


def clean(row: dict[str, Any]) -> bool:
    """Every subscriber connected and stayed, and got every accepted event exactly once."""
    return bool(
        row["delivered"] == row["expected"]
        and row["duplicates"] == 0
        and row["unexpected"] == 0
        and row["disconnects"] == 0
        and row["connect_failures"] == 0
    )


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per label: the median of the figures over its runs and the sum of the counts."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    summary: dict[str, dict[str, Any]] = {}
    for label, runs in by_label.items():
        entry: dict[str, Any] = {"runs": len(runs)}
        for key in MEDIAN_KEYS:
            values = [r[key] for r in runs if r[key] is not None]
            middle = statistics.median(values) if values else None
            if middle is not None and all(isinstance(v, int) for v in values) and float(middle).is_integer():
                entry[key] = int(middle)
            else:
                entry[key] = _r(middle)
        for key in SUM_KEYS:
            entry[key] = sum(r[key] for r in runs)
        entry["ok"] = all(r["ok"] for r in runs)
        summary[label] = entry
    return summary


def ratios(summary: dict[str, dict[str, Any]], top: str = "clarion", bottom: str = "baseline") -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key in RATIO_KEYS:
        a = summary.get(top, {}).get(key)
        b = summary.get(bottom, {}).get(key)
        result[key] = _r(a / b) if a is not None and b else None
    return result


def document(params: dict[str, Any], rows: list[dict[str, Any]], compare: str | None) -> dict[str, Any]:
    summary = summarise(rows)
    return {
        "schema": SCHEMA_VERSION,
        "tool": "clarion bench",
        "params": params,
        "runs": rows,
        "summary": summary,
        "ratios": ratios(summary) if compare else None,
        "lost": sum(r["lost"] for r in rows),
        "duplicates": sum(r["duplicates"] for r in rows),
        "disconnects": sum(r["disconnects"] for r in rows),
        "ok": all(r["ok"] for r in rows),
    }


# --- the plain-text table --------------------------------------------------------------------


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _kib(value: Any) -> str:
    return "-" if value is None else f"{value / 1024:,.1f}"


COLUMNS: list[tuple[str, Any]] = [
    ("run", lambda r: r["name"]),
    ("subs", lambda r: _num(r["subscribers"])),
    ("conn/s", lambda r: _num(r["connect_rate_per_s"], 0)),
    ("events", lambda r: _num(r["events_accepted"])),
    ("ev/s", lambda r: _num(r["rate_achieved"])),
    ("delivered/expected", lambda r: f"{_num(r['delivered'])}/{_num(r['expected'])}"),
    ("lost", lambda r: _num(r["lost"])),
    ("dup", lambda r: _num(r["duplicates"])),
    ("disc", lambda r: _num(r["disconnects"])),
    ("p50 ms", lambda r: _num(r["latency_p50_ms"], 2)),
    ("p95 ms", lambda r: _num(r["latency_p95_ms"], 2)),
    ("p99 ms", lambda r: _num(r["latency_p99_ms"], 2)),
    ("max ms", lambda r: _num(r["latency_max_ms"], 2)),
    ("CPU us/deliv", lambda r: _num(r["server_cpu_us_per_delivery"], 2)),
    ("RSS KiB/conn", lambda r: _kib(r["server_rss_per_connection_bytes"])),
]


def _grid(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]

    def join(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([join(header), "  ".join("-" * w for w in widths), *(join(line) for line in lines)])


def table(doc: dict[str, Any]) -> str:
    params = doc["params"]
    rows = doc["runs"]
    head = (
        f"clarion bench: {params['subscribers']:,} subscribers on {params['channels']} channel(s), "
        f"{params['rate']:g} events/s for {params['duration']:g} s, {params['client_processes']} client process(es)"
    )
    pinned = [
        f"{side}s on CPUs {','.join(map(str, params[f'{side}_cpus']))}"
        for side in ("server", "client")
        if params.get(f"{side}_cpus")
    ]
    if pinned:
        head += "; " + ", ".join(pinned)
    lines = []
    for row in rows:
        named = {**row, "name": f"{row['label']} #{row['round']}" if len(rows) > 1 else row["label"]}
        lines.append([fmt(named) for _, fmt in COLUMNS])
    if doc["ratios"] is not None:
        for label, entry in doc["summary"].items():
            named = {**entry, "name": f"{label} ({entry['runs']} runs)"}
            lines.append([fmt(named) for _, fmt in COLUMNS])
    parts = [head, "", _grid([name for name, _ in COLUMNS], lines)]
    if doc["ratios"] is not None:
        parts.append("(N runs): figures are the median over the runs; events and deliveries are totals")
        parts += ["", "clarion / baseline (medians):"]
        for key, meaning in RATIO_KEYS.items():
            value = doc["ratios"][key]
            parts.append(f"  {key:34} {'-' if value is None else f'{value:.2f}x':>8}   (> 1: {meaning})")
    notes = []
    for row in rows:
        name = f"{row['label']} #{row['round']}"
        if row["lost"]:
            notes.append(f"LOSS: {name} lost {row['lost']:,} of {row['expected']:,} deliveries")
        if row["duplicates"]:
            notes.append(f"DUPLICATES: {name} received {row['duplicates']:,} events twice on one socket")
        if row["unexpected"]:
            notes.append(f"UNEXPECTED: {name} received {row['unexpected']:,} deliveries no accepted event explains")
        if row["disconnects"]:
            codes = row["disconnect_codes"]
            notes.append(
                f"DISCONNECTS: {name}: {row['disconnects']:,} subscribers lost their socket (close codes {codes})"
            )
        if row["connect_failures"]:
            notes.append(f"CONNECT FAILURES: {name}: {row['connect_failures']:,} {row['connect_errors']}")
        if row["events_failed"]:
            first = row["api_first_error"]
            notes.append(f"API ERRORS: {name}: {row['events_failed']:,} failed {row['api_errors']}; first: {first}")
        achieved, asked = row["rate_achieved"], row["rate_requested"]
        if asked and achieved is not None and achieved < 0.95 * asked and not row["events_failed"]:
            notes.append(
                f"RATE: {name} sent {row['rate_achieved']:g} events/s of {row['rate_requested']:g} asked "
                "(the server's API answers held the sender back)"
            )
    if notes:
        parts += ["", *notes]
    elif not any(row["events_accepted"] for row in rows):
        parts += ["", "no events (idle run): every subscriber connected and stayed connected"]
    else:
        parts += ["", "no loss: every subscriber got every accepted event exactly once"]
    return "\n".join(parts)
