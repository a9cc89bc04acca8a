"""Capacity and protection at the door: descriptors, the connection ceiling, per-IP limits.

Every decision here is made once per connection, when its upgrade request has been read and
before the 101 is written, so a refused socket costs an HTTP answer, never a Pusher session. A
WebSocket past capacity gets 503, one past a per-IP limit 429, both with ``Retry-After``.

Descriptors: the soft ``RLIMIT_NOFILE`` is raised to the hard limit at start. WebSockets may use
all of it but ``fd_reserve``, which stays for the HTTP API, health, metrics, Redis and webhooks:
a full node keeps taking publishes and answering its probes.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..observability import metrics
from ..observability.logs import fields
from ..protocol.session import TokenBucket
from .cidr import Network, networks

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("clarion.limits")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
LOG_INTERVAL = 10.0  # seconds between two aggregated log lines of one kind of refusal
MAX_TRACKED_IPS = 100_000  # per table; the least recently seen address is forgotten past it


def raise_nofile() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one; (soft, hard) as they are afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. macOS refuses RLIM_INFINITY
            log.warning("could not raise the descriptor limit", extra=fields(soft=soft, hard=hard, error=str(exc)))
    return soft, hard


def open_fds() -> int | None:
    """Descriptors this process holds (Linux), or None where /proc is not there."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _within(address: Address, nets: tuple[Network, ...]) -> bool:
    return any(address in net for net in nets)


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy; then the right-most
    address of ``X-Forwarded-For`` that is not a trusted proxy (those left of it are the
    client's to write, so never believed)."""
    address = _address(peer)
    if address is None or not forwarded_for or not _within(address, trusted):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        hop_address = _address(hop)
        if hop_address is None:
            return peer  # a malformed hop: trust nothing past the proxy that sent it
        if not _within(hop_address, trusted):
            return str(hop_address)
    return peer  # every hop a proxy of ours


class Aggregated:
    """Refusals counted per reason and logged as one line per interval, never one per attempt."""

    def __init__(self, message: str, clock: Callable[[], float] = time.monotonic, interval: float = LOG_INTERVAL):
        self.message = message
        self.clock = clock
        self.interval = interval
        self._since: dict[str, int] = {}
        self._logged: dict[str, float] = {}

    def note(self, reason: str, **extra: object) -> None:
        self._since[reason] = self._since.get(reason, 0) + 1
        now = self.clock()
        last = self._logged.get(reason)
        if last is not None and now - last < self.interval:
            return
        self._logged[reason] = now
        count = self._since.pop(reason)
        log.warning(self.message, extra=fields(reason=reason, count=count, interval=self.interval, **extra))


class Admission:
    """Whether a new WebSocket may open, and the counts that decide it (one worker's)."""

    def __init__(
        self,
        *,
        fd_limit: int,
        fd_reserve: int,
        max_node_connections: int | None,
        ip_connection_rate: float,
        ip_connection_burst: int,
        ip_max_connections: int,
        exempt: tuple[Network, ...],
        trusted_proxies: tuple[Network, ...],
        clock: Callable[[], float] = time.monotonic,
        table_size: int = MAX_TRACKED_IPS,
    ) -> None:
        self.fd_limit = fd_limit
        self.fd_reserve = fd_reserve
        by_fds = max(0, fd_limit - fd_reserve)
        self.capacity = by_fds if max_node_connections is None else min(by_fds, max_node_connections)
        self.ip_rate = ip_connection_rate
        self.ip_burst = ip_connection_burst
        self.ip_max = ip_max_connections
        self.exempt = exempt
        self.trusted_proxies = trusted_proxies
        self.clock = clock
        self.table_size = table_size
        self.open = 0  # WebSockets open on this worker, all apps
        self.fds_short = False  # descriptors near the limit for another reason (the periodic check)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._per_ip: dict[str, int] = {}  # open sockets of an address, dropped at zero: bounded by open
        self._ip_of: dict[str, str] = {}  # socket id -> address, for sockets counted in _per_ip
        self.refusals = Aggregated("websocket connections refused", clock)
        self._saturated = False
        self.draining = False  # shutting down: every new socket is refused (server/drain.py)
        metrics.CAPACITY_SATURATED.set(0)

    @property
    def saturated(self) -> bool:
        return self._saturated

    def _update(self) -> None:
        saturated = self.open >= self.capacity or self.fds_short
        if saturated != self._saturated:
            self._saturated = saturated
            metrics.CAPACITY_SATURATED.set(1 if saturated else 0)
            if saturated:
                log.warning(
                    "capacity saturated: new websocket connections refused with 503",
                    extra=fields(connections=self.open, capacity=self.capacity, descriptors_short=self.fds_short),
                )
            else:
                log.info("capacity available again", extra=fields(connections=self.open, capacity=self.capacity))

    def limited(self, address: str) -> bool:
        parsed = _address(address)
        return parsed is None or not _within(parsed, self.exempt)

    def admit(self, address: str) -> tuple[int, str, str | None] | None:
        """None to open the socket, else (HTTP status, message, rate-limit kind) to refuse it."""
        if self.draining:
            return 503, "Server shutting down, connect to another node", None
        if self.open >= self.capacity or self.fds_short:
            self._update()
            self.refusals.note("capacity", connections=self.open, capacity=self.capacity)
            return 503, "Over capacity, try again later", None
        if (self.ip_rate > 0 or self.ip_max > 0) and self.limited(address):
            if self.ip_max > 0 and self._per_ip.get(address, 0) >= self.ip_max:
                self.refusals.note("ip_connections", limit=self.ip_max)
                return 429, "Too many connections from this address", "ip_connections"
            if self.ip_rate > 0 and not self._bucket(address).take(self.clock()):
                self.refusals.note("ip_connection_rate", rate=self.ip_rate, burst=self.ip_burst)
                return 429, "Too many new connections from this address, slow down", "ip_connection_rate"
        return None

    def _bucket(self, address: str) -> TokenBucket:
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.table_size:
                self._buckets.popitem(last=False)
            bucket = TokenBucket(self.ip_rate, self.clock(), self.ip_burst)
            self._buckets[address] = bucket
        else:
            self._buckets.move_to_end(address)
        return bucket

    def opened(self, socket_id: str, address: str) -> None:
        self.open += 1
        if self.ip_max > 0 and self.limited(address):
            self._per_ip[address] = self._per_ip.get(address, 0) + 1
            self._ip_of[socket_id] = address
        if self.open >= self.capacity:
            self._update()

    def closed(self, socket_id: str) -> None:
        self.open -= 1
        address = self._ip_of.pop(socket_id, None)
        if address is not None:
            left = self._per_ip[address] - 1
            if left:
                self._per_ip[address] = left
            else:
                del self._per_ip[address]
        if self._saturated:
            self._update()

    def check_descriptors(self, in_use: int | None) -> None:
        """From the periodic check: descriptors short when fewer than half the reserve are free
        (sockets still in their handshake, HTTP clients, files), whatever the WebSocket count."""
        if in_use is not None:
            self.fds_short = self.fd_limit - in_use < self.fd_reserve // 2
        self._update()


class ApiLimits:
    """Per-app HTTP API token buckets (``api_rate_limit`` requests a second, ``api_burst``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self.refusals = Aggregated("api requests rate limited", clock)

    def retry_after(self, app_id: str, rate: float | None, burst: int | None) -> int | None:
        """None when the request may go on, else the seconds to wait (at least 1)."""
        if rate is None:
            return None
        bucket = self._buckets.get(app_id)
        if bucket is None:
            bucket = self._buckets[app_id] = TokenBucket(rate, self.clock(), burst or max(1, int(rate)))
        if bucket.take(self.clock()):
            return None
        self.refusals.note("api", app_id=app_id)
        return max(1, int((1.0 - bucket.tokens) / rate + 0.999))


def admission(settings: Settings) -> Admission:
    """The node's admission, from its settings and the descriptor limit as it is now."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return Admission(
        fd_limit=soft if soft != resource.RLIM_INFINITY else 1 << 20,
        fd_reserve=settings.fd_reserve,
        max_node_connections=settings.max_node_connections,
        ip_connection_rate=settings.ip_connection_rate,
        ip_connection_burst=settings.ip_connection_burst,
        ip_max_connections=settings.ip_max_connections,
        exempt=networks(settings.rate_limit_exempt),
        trusted_proxies=networks(settings.trusted_proxies),
    )


def announce(settings: Settings, admission: Admission, hard: int) -> None:
    """Log the capacity the descriptor limit gives; warn when a configured ceiling cannot fit."""
    by_fds = max(0, admission.fd_limit - admission.fd_reserve)
    log.info(
        "capacity",
        extra=fields(
            websocket_capacity=admission.capacity,
            fd_limit=admission.fd_limit,
            fd_hard_limit=hard,
            fd_reserve=admission.fd_reserve,
        ),
    )
    wanted = [("max_node_connections", settings.max_node_connections)]
    wanted += [(f"max_connections (app {app.id})", app.max_connections) for app in settings.apps]
    for name, value in wanted:
        if value is not None and value > by_fds:
            log.warning(
                f"{name} does not fit under the descriptor limit: connections past {by_fds} get 503",
                extra=fields(setting=name, value=value, fd_limit=admission.fd_limit, fd_reserve=admission.fd_reserve),
            )
    if admission.capacity < admission.fd_reserve:
        log.warning(
            "the descriptor limit leaves little room for WebSockets: raise LimitNOFILE / ulimit -n",
            extra=fields(websocket_capacity=admission.capacity, fd_limit=admission.fd_limit),
        )
