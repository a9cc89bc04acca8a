"""What the server under test costs: CPU time and resident memory of a process and its children.

Read through psutil (``/proc/PID/stat`` and ``/proc/PID/status`` on Linux). A Clarion started with
``CLARION_WORKERS=N`` is a supervisor and N worker processes: all of them are counted. Only a
server on the same host can be measured.
"""

from __future__ import annotations

import psutil


class ServerProbe:
    """CPU seconds and RSS of ``pid`` and every process below it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.root = psutil.Process(pid)  # raises psutil.NoSuchProcess for a wrong pid

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> dict[int, float]:
        """User + system CPU seconds per process (exited children's time is not included)."""
        seconds: dict[int, float] = {}
        for proc in self.processes():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            seconds[proc.pid] = times.user + times.system
        return seconds

    @staticmethod
    def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
        """CPU seconds spent between two ``cpu()`` samples (a process born in between counts whole)."""
        return sum(max(0.0, value - before.get(pid, 0.0)) for pid, value in after.items())

    def rss(self) -> int:
        """Resident bytes, summed over the processes (pages shared between workers count twice)."""
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def count(self) -> int:
        return len(self.processes())

    def cpus(self) -> list[int] | None:
        """The CPUs the server's processes may run on (their union), where the platform says."""
        found: set[int] = set()
        for proc in self.processes():
            try:
                found.update(proc.cpu_affinity() or [])
            except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
                continue
        return sorted(found) or None
