"""The pure parts of capacity and protection: client addresses, admission, API buckets."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from clarion.server.cidr import networks
from clarion.server.limits import Admission, Aggregated, ApiLimits, client_address
from fakeclock import FakeClock

TRUSTED = networks("10.0.0.0/8, 127.0.0.1")


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("127.0.0.1", "203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", "198.51.100.1, 203.0.113.5", "203.0.113.5"),  # right-most untrusted
        ("127.0.0.1", "203.0.113.5, 10.2.3.4", "203.0.113.5"),  # past a second trusted proxy
        ("127.0.0.1", "10.2.3.4", "127.0.0.1"),  # every hop ours: the peer
        ("127.0.0.1", "garbage, 203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", "203.0.113.5, garbage", "127.0.0.1"),  # a malformed hop stops the walk
        ("127.0.0.1", None, "127.0.0.1"),
        ("192.0.2.7", "203.0.113.5", "192.0.2.7"),  # untrusted peer: header ignored
        ("127.0.0.1", " 2001:db8::1 ", "2001:db8::1"),
    ],
)
def test_client_address(peer: str, header: str | None, expected: str) -> None:
    assert client_address(peer, header, TRUSTED) == expected


def test_networks_reads_lists_bare_addresses_and_none() -> None:
    assert [str(n) for n in networks("10.0.0.0/8, ::1")] == ["10.0.0.0/8", "::1/128"]
    assert networks("none") == networks("") == ()
    with pytest.raises(ValueError):
        networks("10.0.0.0/33")


def admission(clock: FakeClock, **overrides: Any) -> Admission:
    values: dict[str, Any] = {
        "fd_limit": 100,
        "fd_reserve": 20,
        "max_node_connections": None,
        "ip_connection_rate": 0.0,
        "ip_connection_burst": 1,
        "ip_max_connections": 0,
        "exempt": networks("127.0.0.0/8"),
        "trusted_proxies": (),
        "clock": clock,
    }
    values.update(overrides)
    return Admission(**values)


def test_capacity_is_the_limit_less_the_reserve_or_the_ceiling_below_it() -> None:
    clock = FakeClock()
    assert admission(clock).capacity == 80
    assert admission(clock, max_node_connections=10).capacity == 10
    assert admission(clock, max_node_connections=1000).capacity == 80
    assert admission(clock, fd_reserve=500).capacity == 0


def test_admission_refuses_at_capacity_and_recovers() -> None:
    clock = FakeClock()
    gate = admission(clock, max_node_connections=2)
    for n in range(2):
        assert gate.admit("192.0.2.1") is None
        gate.opened(str(n), "192.0.2.1")
    assert gate.admit("192.0.2.1") == (503, "Over capacity, try again later", None)
    assert gate.saturated
    gate.closed("0")
    assert not gate.saturated
    assert gate.admit("192.0.2.1") is None


def test_descriptors_short_saturate_whatever_the_count() -> None:
    gate = admission(FakeClock())
    gate.check_descriptors(91)  # 9 free, fewer than half the reserve of 20
    assert gate.saturated and gate.admit("192.0.2.1") is not None
    gate.check_descriptors(50)
    assert not gate.saturated and gate.admit("192.0.2.1") is None


def test_per_ip_cap_skips_exempt_addresses() -> None:
    gate = admission(FakeClock(), ip_max_connections=1)
    gate.opened("a", "192.0.2.1")
    assert gate.admit("192.0.2.1") == (429, "Too many connections from this address", "ip_connections")
    assert gate.admit("192.0.2.2") is None
    gate.opened("b", "127.0.0.1")
    assert gate.admit("127.0.0.1") is None
    gate.closed("a")
    gate.closed("b")
    assert gate.admit("192.0.2.1") is None
    assert gate.open == 0


def test_rate_table_is_bounded_least_recently_seen_first() -> None:
    clock = FakeClock()
    gate = admission(clock, ip_connection_rate=1.0, ip_connection_burst=1, table_size=2)
    assert gate.admit("192.0.2.1") is None
    assert gate.admit("192.0.2.2") is None
    assert gate.admit("192.0.2.1") is not None  # spent; now the most recent
    assert gate.admit("192.0.2.3") is None  # evicts 192.0.2.2
    assert gate.admit("192.0.2.2") is None  # forgotten: a fresh bucket
    assert len(gate._buckets) == 2


def test_aggregated_logs_once_per_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    agg = Aggregated("refused", clock, interval=10.0)
    with caplog.at_level(logging.WARNING, logger="clarion.limits"):
        for _ in range(5):
            agg.note("ip")
        clock.advance(10.0)
        agg.note("ip")
    counts = [record.__dict__["fields"]["count"] for record in caplog.records]
    assert counts == [1, 5]


def test_api_limits_retry_after() -> None:
    clock = FakeClock()
    limits = ApiLimits(clock)
    assert limits.retry_after("1", None, None) is None
    assert limits.retry_after("1", 0.5, 2) is None
    assert limits.retry_after("1", 0.5, 2) is None
    assert limits.retry_after("1", 0.5, 2) == 2  # one token at 0.5 a second
    clock.advance(2.0)
    assert limits.retry_after("1", 0.5, 2) is None
    assert limits.retry_after("2", 0.5, 2) is None  # each app its own bucket


def test_a_bad_cidr_list_stops_the_start_naming_the_setting() -> None:
    from clarion.server.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_settings(environ={"CLARION_TRUSTED_PROXIES": "10.0.0.0/99"})
    settings = load_settings(environ={"CLARION_RATE_LIMIT_EXEMPT": "none", "CLARION_FD_RESERVE": "0"})
    assert networks(settings.rate_limit_exempt) == () and settings.fd_reserve == 0
