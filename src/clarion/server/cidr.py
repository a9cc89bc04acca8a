"""CIDR lists, as the settings give them (comma-separated text)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(value: str | Iterable[str]) -> tuple[Network, ...]:
    """A CIDR list (comma-separated text or items); a bare address is a /32 or /128; ``none``
    is the empty list (an empty environment variable leaves a setting at its default)."""
    if isinstance(value, str) and value.strip().lower() == "none":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())
