"""The in-process queue and async SQLAlchemy's after-commit against a real ``clarion serve``:
events queued while the socket server is down arrive once it is up, each channel in order and
none twice; a dead batch replayed arrives; broadcasts inside an ``AsyncSession`` transaction go
out after the commit and never after a rollback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from clarion.broadcasting import Broadcaster, Channel, InProcessQueue, Message, PrivateChannel, RetryPolicy
from conftest import RunningServer, run_server
from pusherclient import PusherSocket, fresh
from redisproc import free_port

from .conftest import driver_url


def port_url(port: int) -> str:
    from conftest import APP_ID, APP_KEY, APP_SECRET

    return f"pusher://{APP_KEY}:{APP_SECRET}@127.0.0.1:{port}/{APP_ID}"


async def history(broadcaster: Broadcaster, channel: str) -> list[dict[str, Any]]:
    """The events the server published on ``channel``, oldest first, read through the SDK."""
    answer = await broadcaster._pusher().ahistory(channel, {"limit": "100"})
    return [json.loads(frame["data"]) for frame in answer["events"]]


async def wait_until(check: Callable[[], bool] | Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not (await check() if asyncio.iscoroutinefunction(check) else check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.1)


async def test_events_queued_while_the_server_is_down_arrive_when_it_is_up_in_order_per_channel_and_once():
    port = free_port()
    queue = InProcessQueue(policy=RetryPolicy(max_tries=1000, base=0.05, cap=0.5))
    broadcaster = Broadcaster(port_url(port), queue=queue)
    names = [fresh("queue-outage-") for _ in range(3)]
    channels = [f"private-{name}" for name in names]
    for i in range(40):
        for name in names:
            await broadcaster.on(PrivateChannel(name)).as_("tick").with_({"i": i}).asend()
    assert queue.pending() == 120  # nothing listens on the port yet: all of it waits in memory
    with run_server(env={"CLARION_PORT": str(port)}):
        assert await queue.join(timeout=60), f"{queue.pending()} events still queued"
        for channel in channels:
            assert [e["i"] for e in await history(broadcaster, channel)] == list(range(40))
    assert queue.dead_letters() == []
    await broadcaster.aclose()


async def test_a_batch_dead_lettered_in_an_outage_is_sent_by_a_replay_once_the_server_is_back():
    port = free_port()
    queue = InProcessQueue(policy=RetryPolicy(max_tries=2, base=0.01, cap=0.02))
    broadcaster = Broadcaster(port_url(port), queue=queue)
    channel = fresh("private-queue-replay-")
    messages = [Message((channel,), "tick", json.dumps({"i": i})) for i in range(3)]
    await broadcaster.adeliver(messages, queued=True)
    await wait_until(lambda: len(queue.dead_letters()) == 3, 30, "3 dead letters")
    assert {letter.message.id for letter in queue.dead_letters()} == {m.id for m in messages}
    with run_server(env={"CLARION_PORT": str(port)}):
        assert queue.replay() == 3
        assert await queue.join(timeout=30)
        assert [e["i"] for e in await history(broadcaster, channel)] == [0, 1, 2]
    await broadcaster.aclose()


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(100))


async def test_a_broadcast_inside_an_async_session_goes_after_its_commit_and_never_after_a_rollback(
    sdk_clarion: RunningServer, tmp_path: Path
):
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    broadcaster = Broadcaster(driver_url(sdk_clarion), queue=InProcessQueue())
    channel = fresh("notes-")

    async with await PusherSocket.open(sdk_clarion.ws_url()) as sock:
        await sock.subscribe(channel)
        try:
            async with sessions() as session, session.begin():
                session.add(Note(text="rolled back"))
                await session.flush()
                doomed = broadcaster.on(Channel(channel)).as_("note").with_({"text": "rolled back"}).event()
                await broadcaster.abroadcast(doomed, queued=True, session=session)
                raise RuntimeError("abort")
        except RuntimeError:
            pass
        async with sessions() as session:
            async with session.begin():
                session.add(Note(text="committed"))
                pending = broadcaster.on(Channel(channel)).as_("note").with_({"text": "committed"}).event()
                await broadcaster.abroadcast(pending, queued=True, session=session)
                # Inside the transaction nothing has gone out yet.
                await sock.nothing(within=0.5)
            frame = await sock.expect("note", channel, timeout=15)
            assert json.loads(frame["data"]) == {"text": "committed"}
        await sock.nothing(within=0.5)
        async with sessions() as session:
            assert [n.text for n in (await session.scalars(select(Note)))] == ["committed"]
    await broadcaster.aclose()
    await engine.dispose()
