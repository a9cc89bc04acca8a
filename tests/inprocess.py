"""A ``Node`` run in-process, for fast unit tests of the room: fake sockets that record what the
node writes to them, the fake clock for the node's timers and the sockets' sessions, and the
memory backend, whose round trips a test can hold open (``Gates``) to choose an interleaving.

The node, its hubs, the sessions and the memory backend are the real ones; only the socket (a
``Connection`` stand-in with the same face, ``hub.Socket``) and time are not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from clarion.protocol.app import App
from clarion.protocol.session import Session
from clarion.protocol.signatures import channel_auth, user_auth
from clarion.scaling.contracts import Envelope, Keep, Once
from clarion.scaling.memory import MemoryBackend, MemoryCluster
from clarion.server.config import Settings
from clarion.server.frames import text_frame
from clarion.server.hub import AppHub
from clarion.server.node import Node
from clarion.server.webhooks import Webhooks
from fakeclock import FakeClock

APP = App(id="1", key="room-key", secret="room-secret")


def decode(wire: bytes) -> list[dict[str, Any]]:
    """The JSON of each unmasked server text frame in ``wire``."""
    frames = []
    at = 0
    while at < len(wire):
        length = wire[at + 1] & 0x7F
        at += 2
        if length == 126:
            length, at = int.from_bytes(wire[at : at + 2], "big"), at + 2
        elif length == 127:
            length, at = int.from_bytes(wire[at : at + 8], "big"), at + 8
        frames.append(json.loads(wire[at : at + length]))
        at += length
    return frames


class FakeSocket:
    """What the node sees of a connection, recording every frame written to it."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.closing = False
        self.out_fd = -1  # no descriptor: the fan-out writes through write()
        self.closed_with: tuple[int, str] | None = None
        self._wire = bytearray()
        self._read = 0

    @property
    def socket_id(self) -> str:
        return self.session.socket_id

    def send(self, text: str) -> None:
        self.write(text_frame(text))

    def write(self, frame: bytes) -> bool:
        if self.closing:
            return False
        self._wire += frame
        return True

    def write_rest(self, frame: bytes, done: int) -> bool:
        return self.write(frame[max(done, 0) :])

    def close(self, code: int, reason: str) -> None:
        self.closing = True
        self.closed_with = (code, reason)

    def received(self) -> list[dict[str, Any]]:
        """Every frame written to the socket so far."""
        return decode(bytes(self._wire))

    def new(self) -> list[dict[str, Any]]:
        """The frames written since the last call."""
        frames = decode(bytes(self._wire[self._read :]))
        self._read = len(self._wire)
        return frames

    def events(self) -> list[str]:
        return [frame["event"] for frame in self.received()]


class Gates:
    """Round trips of the memory backend that a test holds open. ``hold("user_online")`` makes
    the next calls of that method wait until ``release``; ``hold("publish@node-0")`` holds them on
    one node only. ``log`` lists calls as they finish."""

    def __init__(self) -> None:
        self.closed: dict[str, asyncio.Event] = {}
        self.waiting: dict[str, int] = {}
        self.log: list[str] = []

    def hold(self, name: str) -> None:
        self.closed[name] = asyncio.Event()

    def release(self, name: str) -> None:
        self.closed.pop(name).set()

    async def passing(self, name: str) -> None:
        gate = self.closed.get(name)
        if gate is not None:
            self.waiting[name] = self.waiting.get(name, 0) + 1
            try:
                await gate.wait()
            finally:
                self.waiting[name] -= 1

    async def waiting_at(self, name: str, calls: int = 1) -> None:
        """Until ``calls`` calls wait at ``name`` (only other tasks' steps pass meanwhile, so a
        bounded number of loop turns is plenty)."""
        for _ in range(10_000):
            if self.waiting.get(name, 0) >= calls:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"nothing came to wait at {name}")


class GatedBackend(MemoryBackend):
    """The memory backend, with every round trip a test may want to hold passing a gate. Writes
    are held before writing: until released, the cluster has not seen them."""

    def __init__(self, cluster: MemoryCluster, node_id: str, gates: Gates) -> None:
        super().__init__(cluster, node_id)
        self.gates = gates

    async def _through(self, name: str) -> None:
        await self.gates.passing(name)
        await self.gates.passing(f"{name}@{self.node_id}")

    async def publish(self, envelope: Envelope, keep: Keep | None = None, once: Once | None = None) -> bool:
        await self._through("publish")
        published = await super().publish(envelope, keep, once)
        self.gates.log.append(f"publish {json.loads(envelope.frame)['event']}")
        return published

    async def control(self, message: Any) -> None:
        await self._through("control")
        await super().control(message)
        self.gates.log.append(f"control {message.kind}")

    async def join(self, app_id: str, channel: str, user_id: str, user_info: Any, limit: int) -> int:
        await self._through("join")
        return await super().join(app_id, channel, user_id, user_info, limit)

    async def add_subscriptions(self, app_id: str, channel: str, delta: int) -> int:
        await self._through("add_subscriptions")
        return await super().add_subscriptions(app_id, channel, delta)

    async def user_online(self, app_id: str, user_id: str) -> bool:
        await self._through("user_online")
        result = await super().user_online(app_id, user_id)
        self.gates.log.append("user_online")
        return result

    # Reads are held after reading: their answer is on its way back while the world moves on.
    async def online(self, app_id: str, user_ids: tuple[str, ...]) -> set[str]:
        answer = await super().online(app_id, user_ids)
        await self._through("online")
        return answer

    async def history(self, app_id: str, channel: str, *, after: int | None, limit: int, max_age: float) -> Any:
        answer = await super().history(app_id, channel, after=after, limit=limit, max_age=max_age)
        await self._through("history")
        return answer


class Room:
    """One or more in-process nodes sharing a memory cluster and the fake clock."""

    def __init__(self, app: App = APP) -> None:
        self.app = app
        self.clock = FakeClock()
        self.cluster = MemoryCluster(clock=self.clock)
        self.gates = Gates()
        self.nodes: list[Node] = []

    async def node(self) -> Node:
        backend = GatedBackend(self.cluster, f"node-{len(self.nodes)}", self.gates)
        node = Node(Settings(apps=[self.app], fanout="python"), backend, Webhooks({}), clock=self.clock)
        await node.start()
        self.nodes.append(node)
        return node

    def hub(self, node: Node) -> AppHub:
        return node.hubs[self.app.id]

    def connect(self, node: Node) -> FakeSocket:
        """A socket as the front door opens it: registered, told its socket id."""
        session = Session(self.app, node.new_socket_id(), self.clock())
        sock = FakeSocket(session)
        self.hub(node).connections[sock.socket_id] = sock
        sock.send(session.hello())
        return sock

    async def send(self, node: Node, sock: FakeSocket, event: str, data: Any, channel: str | None = None) -> None:
        """The socket sends a frame; the node carries out what its session decided."""
        frame: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        actions = sock.session.receive(json.dumps(frame), self.clock())
        await node.carry_out(sock, actions)

    async def subscribe(self, node: Node, sock: FakeSocket, channel: str, member: dict[str, Any] | None = None) -> None:
        data: dict[str, Any] = {"channel": channel}
        if channel.startswith(("private-", "presence-")):
            channel_data = json.dumps(member) if member is not None else None
            data["auth"] = channel_auth(self.app.key, self.app.secret, sock.socket_id, channel, channel_data)
            if channel_data is not None:
                data["channel_data"] = channel_data
        await self.send(node, sock, "pusher:subscribe", data)

    async def sign_in(self, node: Node, sock: FakeSocket, user_id: str, watchlist: list[str] | None = None) -> None:
        user_data = json.dumps({"id": user_id, **({"watchlist": watchlist} if watchlist is not None else {})})
        auth = user_auth(self.app.key, self.app.secret, sock.socket_id, user_data)
        await self.send(node, sock, "pusher:signin", {"auth": auth, "user_data": user_data})

    async def gone(self, node: Node, sock: FakeSocket) -> None:
        """The socket's connection is lost."""
        sock.closing = True
        await node.drop(sock)

    async def trigger(self, node: Node, channel: str, name: str = "e", data: str = "{}") -> None:
        """A server event, as the HTTP API publishes it."""
        frame = json.dumps({"event": name, "channel": channel, "data": data})
        await node.publish(self.app, channel, frame, None, "api", data=data)

    @staticmethod
    async def settle() -> None:
        """Let what the loop has scheduled (the bus flush, count flushes) run."""
        for _ in range(5):
            await asyncio.sleep(0)


@contextmanager
def running(task: asyncio.Task[Any]) -> Iterator[asyncio.Task[Any]]:
    """A background step of a test, cancelled if the test fails before it ends."""
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
