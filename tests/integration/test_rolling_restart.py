"""A rolling restart behind a balancer: clients on node A, publishes through node B at a steady
rate; A gets SIGTERM and starts again. Each client, sent away with 4200, reconnects to the next
node of its list (as a balancer would send it elsewhere) and resumes from its last position, so it
receives every sequence number exactly once and in order."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp

from clarion.protocol import signatures
from conftest import RunningServer
from integration.test_cluster import cluster_env
from pusherclient import PusherSocket, api_call, wait_for
from redisproc import free_port

CHANNEL = "private-rolling"  # private-: kept in history, so a resume can replay
CLIENTS = 6
RATE = 40.0  # publishes per second through node B


class Client:
    """A Pusher client with a list of nodes: on 4200 (or a refused connect) it moves to the next
    one and subscribes with its last position, as docs/recovery.md describes."""

    def __init__(self, ports: list[int], key: str, secret: str) -> None:
        self.ports = ports
        self.key = key
        self.secret = secret
        self.seen: list[int] = []
        self.position: tuple[str, int] | None = None
        self.reconnects = 0
        self.problems: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        turn = 0
        while not stop.is_set():
            port = self.ports[turn % len(self.ports)]
            turn += 1
            try:
                sock = await PusherSocket.open(f"ws://127.0.0.1:{port}/app/{self.key}?protocol=7&client=t&version=1")
            except (aiohttp.ClientError, OSError, AssertionError):
                await asyncio.sleep(0.05)  # refused (draining) or down: try the next node
                continue
            try:
                await self._listen(sock, stop)
            finally:
                await sock.close()
            self.reconnects += 1

    async def _listen(self, sock: PusherSocket, stop: asyncio.Event) -> None:
        data: dict[str, Any] = {
            "channel": CHANNEL,
            "auth": signatures.channel_auth(self.key, self.secret, sock.socket_id, CHANNEL, None),
        }
        if self.position is not None:
            data["resume"] = {"epoch": self.position[0], "serial": self.position[1]}
        await sock.send("pusher:subscribe", data)
        while not stop.is_set():
            msg = await sock.ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                return  # closed (4200 on a drain): move on
            frame = json.loads(msg.data)
            event = frame.get("event")
            if event == "tick":
                self.seen.append(json.loads(frame["data"])["n"])
                self.position = (frame["epoch"], frame["serial"])
            elif event == "clarion:resumed" and not json.loads(frame["data"])["recovered"]:
                self.problems.append(f"not recovered: {frame['data']}")


async def _publish(node: RunningServer, count: int, sent: list[int]) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(1, count + 1):
        body = {"name": "tick", "channel": CHANNEL, "data": json.dumps({"n": n})}
        status, answer = await api_call(
            node.http_url, node.key, node.secret, "POST", f"/apps/{node.app_id}/events", body
        )
        assert status == 200, answer
        sent.append(n)
        await asyncio.sleep(max(0.0, start + n / RATE - loop.time()))


async def test_rolling_restart_loses_and_repeats_nothing(server_factory: Any) -> None:
    env = cluster_env(CLARION_SHUTDOWN_SPREAD="1", CLARION_SHUTDOWN_TIMEOUT="5")
    port_a = free_port()
    node_a = server_factory(env={**env, "CLARION_PORT": str(port_a)})
    node_b = server_factory(env=env)
    clients = [Client([port_a, node_b.port], node_a.key, node_a.secret) for _ in range(CLIENTS)]
    stop = asyncio.Event()
    runs = [asyncio.create_task(client.run(stop)) for client in clients]
    sent: list[int] = []
    try:
        # Everyone subscribed on A before the first publish (B sees the subscriptions via Redis).
        async def all_on_a() -> bool:
            status, answer = await api_call(
                node_b.http_url,
                node_b.key,
                node_b.secret,
                "GET",
                f"/apps/{node_b.app_id}/channels/{CHANNEL}",
                info="subscription_count",
            )
            return status == 200 and answer.get("subscription_count") == CLIENTS

        await wait_for(all_on_a, timeout=10)
        total = int(RATE * 6)
        publisher = asyncio.create_task(_publish(node_b, total, sent))
        await wait_for(lambda: len(sent) >= RATE, timeout=10)  # a second of traffic first
        node_a.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(node_a.proc.wait, 15) == 0
        restarted = server_factory(env={**env, "CLARION_PORT": str(port_a)})
        assert restarted.port == port_a
        await publisher
        await wait_for(lambda: all(len(c.seen) >= total for c in clients), timeout=15)
    finally:
        stop.set()
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
    expected = list(range(1, total + 1))
    for client in clients:
        assert client.problems == []
        assert client.reconnects >= 1  # each was sent away from A at least once
        assert client.seen == expected, [n for n in client.seen if client.seen.count(n) != 1][:10]
