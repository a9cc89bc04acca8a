"""CPU affinity for a bench on the server's own machine: the load generator and the subscribers on
some cores, the servers it starts on others, as one would run them on separate hosts.

On a shared machine the scheduler may wake a subscriber process on the core where the server is
busy sending, where it waits; pinning keeps each side on its own cores. Linux only
(``os.sched_setaffinity``).
"""

from __future__ import annotations

import os


def supported() -> bool:
    return hasattr(os, "sched_setaffinity")


def parse(text: str) -> frozenset[int]:
    """``taskset``'s list form: ``0``, ``0,2``, ``1-3``. Raises ValueError with a message."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not (first.isdigit() and (not dash or last.isdigit())):
            raise ValueError(f"{text!r} is not a CPU list like 0 or 0,2 or 1-3")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"{part.strip()!r} runs backwards")
        cpus.update(range(low, high + 1))
    available = of(0)
    missing = sorted(cpus - available)
    if missing:
        raise ValueError(f"CPU {missing[0]} is not available here (this process may use {listed(available)})")
    return frozenset(cpus)


def of(pid: int) -> frozenset[int]:
    """The CPUs ``pid`` (0: this process) may run on."""
    return frozenset(os.sched_getaffinity(pid))


def pin(pid: int, cpus: frozenset[int]) -> None:
    """Pin ``pid`` (0: this process); processes it starts later inherit the set."""
    os.sched_setaffinity(pid, cpus)


def listed(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))
