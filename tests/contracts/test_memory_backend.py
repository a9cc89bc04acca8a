"""What only the memory twin does: its store of used idempotency keys stays bounded."""

from __future__ import annotations

from clarion.observability import metrics
from clarion.scaling.contracts import Envelope, Once
from clarion.scaling.memory import MemoryCluster
from fakeclock import FakeClock

APP = "app-1"


def evicted() -> float:
    return metrics.REGISTRY.get_sample_value("clarion_idempotency_keys_evicted_total") or 0.0


async def test_the_store_of_used_keys_is_bounded_forgetting_the_oldest_first() -> None:
    clock = FakeClock()
    cluster = MemoryCluster(clock=clock, claims_limit=3)
    node = cluster.node("only")
    got: list[Envelope] = []
    await node.start(got.append, lambda _: None)
    before = evicted()
    for n in range(5):
        assert await node.publish(Envelope(APP, "news", f"e{n}"), once=Once(f"k{n}", 300)) is True
        assert len(cluster.claims) <= 3
    assert evicted() - before == 2
    # The newest keys are still known; the two oldest were forgotten early.
    for n in (2, 3, 4):
        assert await node.publish(Envelope(APP, "news", "repeat"), once=Once(f"k{n}", 300)) is False
    assert await node.publish(Envelope(APP, "news", "e0 again"), once=Once("k0", 300)) is True


async def test_expired_keys_leave_the_store_without_eviction() -> None:
    clock = FakeClock()
    cluster = MemoryCluster(clock=clock, claims_limit=3)
    node = cluster.node("only")
    await node.start(lambda _: None, lambda _: None)
    before = evicted()
    for n in range(30):
        assert await node.publish(Envelope(APP, "news", f"e{n}"), once=Once(f"k{n}", 10)) is True
        clock.advance(5)  # each key outlives the next one only
        assert len(cluster.claims) <= 2
    assert evicted() == before
