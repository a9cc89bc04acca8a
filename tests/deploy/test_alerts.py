"""The alert rules of deploy/prometheus: checked and unit-tested by promtool, parsed by Prometheus
itself, held to the metrics catalog, and replayed against the recordings of the runbook drills."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, stop_process

PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "clarion-rules.yml"
DRILLS = ROOT / "deploy" / "drills"
RECORDINGS = sorted((DRILLS / "recordings").glob("*.yml"))
CATALOG = ROOT / "docs" / "operations" / "metrics.md"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

# The agreed names and severities (the operator's kit, issue 16).
ALERTS = {
    "ClarionDown": "page",
    "ClarionNotReady": "page",
    "ClarionConnectionFailures": "page",
    "ClarionConnectionStorm": "ticket",
    "ClarionDeliveryLatencyHigh": "page",
    "ClarionDeliveryLatencyDegraded": "ticket",
    "ClarionSlowConsumers": "ticket",
    "ClarionDescriptorsNearLimit": "page",
    "ClarionAcceptErrors": "page",
    "ClarionSaturated": "page",
    "ClarionMemoryGrowth": "ticket",
    "ClarionMemoryHigh": "page",
    "ClarionRedisDown": "page",
    "ClarionRedisFlapping": "ticket",
    "ClarionWebhookFailures": "ticket",
    "ClarionWebhooksDropped": "page",
    "ClarionWebhookBacklog": "ticket",
    "ClarionBroadcastFailures": "ticket",
    "ClarionBroadcastDeadLetters": "page",
    "ClarionAuthFailures": "ticket",
    "ClarionRateLimited": "ticket",
    "ClarionApiErrors": "page",
    "ClarionCertificateExpiry": "ticket",
}

# Metrics the rules read that are not Clarion's: Prometheus's own, and the blackbox exporter's.
FOREIGN = {"up", "probe_ssl_earliest_cert_expiry"}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The rules as Prometheus itself loads them (GET /api/v1/rules of a real server)."""
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(f"global:\n  evaluation_interval: 1h\nrule_files:\n  - {RULES}\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=2) as resp:
                    groups = json.load(resp)["data"]["groups"]
                if groups:
                    return [rule for group in groups for rule in group["rules"]]
            except OSError:
                pass
            assert proc.poll() is None, "prometheus exited"
            assert time.monotonic() < deadline, "prometheus did not load the rules"
            time.sleep(0.1)  # polling a subprocess's readiness
    finally:
        stop_process(proc)


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_checks_the_example_config() -> None:
    result = promtool("check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    files = sorted(str(p) for p in (PROM / "tests").glob("*.yml"))
    assert files
    result = promtool("test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    text = "\n".join(p.read_text() for p in (PROM / "tests").glob("*.yml"))
    quiet = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", text))
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels:", text))
    assert sorted(set(ALERTS) - firing) == []
    assert sorted(set(ALERTS) - quiet) == []


def test_the_alerts_are_the_agreed_ones_with_their_severities(loaded: list[dict[str, Any]]) -> None:
    got = {rule["name"]: rule["labels"].get("severity") for rule in loaded if rule["type"] == "alerting"}
    assert got == ALERTS


def test_every_alert_links_its_runbook_section(loaded: list[dict[str, Any]]) -> None:
    for rule in loaded:
        annotations = rule["annotations"]
        assert annotations["runbook_url"] == f"docs/operations/runbook.md#{rule['name'].lower()}", rule["name"]
        assert annotations["summary"] and annotations["description"], rule["name"]


def catalog() -> set[str]:
    """Metric names in the tables of docs/operations/metrics.md (first column, back-quoted)."""
    return set(re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \|", CATALOG.read_text(), re.MULTILINE))


def test_catalog_parses() -> None:
    names = catalog()
    assert {"clarion_connections", "clarion_broadcasts_dead_letters", "clarion_delivery_latency_seconds"} <= names
    assert len(names) > 40


def metrics_read(queries: list[str]) -> set[str]:
    """Words followed by a selector or a range: metric names, not functions or label names."""
    used: set[str] = set()
    for query in queries:
        query = re.sub(r'"[^"]*"', '""', query)
        used |= set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*[{\[]", query))
    return used


def missing_from_catalog(queries: list[str]) -> list[str]:
    names = catalog()
    return sorted(
        name
        for name in metrics_read(queries) - FOREIGN
        if name not in names and re.sub(r"_(bucket|sum|count)$", "", name) not in names
    )


def test_every_metric_the_rules_read_is_in_the_catalog(loaded: list[dict[str, Any]]) -> None:
    queries = [rule["query"] for rule in loaded]
    assert len(metrics_read(queries) - FOREIGN) >= 15  # the parser finds the metrics, not an empty set
    assert missing_from_catalog(queries) == []


def test_a_renamed_metric_is_caught() -> None:
    renamed = 'rate(clarion_slow_consumer_closes_total{job="clarion"}[5m]) > 0'
    assert missing_from_catalog([renamed]) == ["clarion_slow_consumer_closes_total"]


# -- drill replays ---------------------------------------------------------------------------------


def read_recording(path: Path) -> tuple[list[str], dict[str, Any]]:
    lines = path.read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    body = json.loads("\n".join(line for line in lines if not line.startswith("#")))
    return header, body


def bare_rules(tmp: Path) -> Path:
    """The rules without their `labels:` and `annotations:` blocks: what fires, and for which target,
    is the same; the replay need not know the annotation texts or the severities."""
    out: list[str] = []
    skipping = False
    for line in RULES.read_text().splitlines():
        indent = len(line) - len(line.lstrip())
        if line.strip() in ("labels:", "annotations:") and indent == 8:
            skipping = True
            continue
        if skipping and (indent > 8 or not line.strip()):
            continue
        skipping = False
        out.append(line)
    path = tmp / "bare-rules.yml"
    path.write_text("\n".join(out) + "\n")
    check = promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout, check.stdout + check.stderr
    assert "severity" not in path.read_text()
    return path


def instance_of(series: str) -> str:
    match = re.search(r'instance="([^"]*)"', series)
    assert match, series
    return match.group(1)


def replay_file(body: dict[str, Any], rules: Path) -> dict[str, Any]:
    """One promtool test per scrape target: its own series, and the alerts expected (or expected
    quiet) for it. Every rule is per target (job, instance), so a target is judged on its own."""
    checks: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = defaultdict(dict)
    for entry in body["expect"]:
        key = (entry["alert"], entry["eval_time"])
        checks[entry["labels"]["instance"]].setdefault(key, []).append({"exp_labels": entry["labels"]})
    for entry in body["quiet"]:
        checks[entry["labels"]["instance"]].setdefault((entry["alert"], entry["eval_time"]), [])
    tests = []
    for instance, wanted in checks.items():
        tests.append(
            {
                "name": f"{body['drill']} on {instance}",
                "interval": body["interval"],
                "input_series": [s for s in body["input_series"] if instance_of(s["series"]) == instance],
                "alert_rule_test": [
                    {"eval_time": at, "alertname": alert, "exp_alerts": alerts}
                    for (alert, at), alerts in wanted.items()
                ],
            }
        )
    return {"rule_files": [str(rules)], "evaluation_interval": body["interval"], "tests": tests}


def test_there_is_a_recording_for_every_drill() -> None:
    drills = set(re.findall(r'^@drill\("([a-z-]+)"\)', (DRILLS / "drill.py").read_text(), re.MULTILINE))
    assert drills
    assert {p.stem for p in RECORDINGS} == drills


@pytest.mark.parametrize("recording", RECORDINGS, ids=[p.stem for p in RECORDINGS])
def test_the_drill_fires_its_alert_in_promtool(recording: Path, tmp_path: Path) -> None:
    header, body = read_recording(recording)
    for field in ("command:", "date:", "commit:"):
        assert any(line.startswith(f"# {field}") for line in header), f"the header lacks {field}"
    assert body["drill"] == recording.stem
    assert body["interval"] == "15s", "replayed at the interval the samples were scraped at"
    assert body["expect"], "a drill names the alert it must fire"
    assert set(e["alert"] for e in body["expect"]) <= set(ALERTS)
    test = tmp_path / "replay.yml"
    test.write_text(json.dumps(replay_file(body, bare_rules(tmp_path))))
    result = promtool("test", "rules", str(test))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_a_replay_can_fail(tmp_path: Path) -> None:
    """The replay's verdict depends on the samples: the node-crash recording with the node kept up
    must not fire ClarionDown."""
    _, body = read_recording(DRILLS / "recordings" / "node-crash.yml")
    for series in body["input_series"]:
        if series["series"].startswith("up{"):
            series["values"] = " ".join("1" for _ in series["values"].split())
    test = tmp_path / "replay.yml"
    test.write_text(json.dumps(replay_file(body, bare_rules(tmp_path))))
    result = promtool("test", "rules", str(test))
    assert result.returncode != 0
    assert "alertname: ClarionDown" in result.stdout + result.stderr
