"""A minimal raw Pusher-protocol client for tests: every frame visible, nothing hidden.

Real third-party clients are exercised in tests/compat; this one lets tests send what no real
client would (malformed frames, forged auth) and read exactly what the server answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from clarion.protocol import signatures

POSITION_FIELDS = ("epoch", "serial", "replayed")


class PusherSocket:
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.socket_id = ""
        self.activity_timeout = 0

    @classmethod
    async def open(cls, url: str, *, handshake: bool = True, **kwargs: Any) -> PusherSocket:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, autoping=False, **kwargs)
        except BaseException:
            await session.close()
            raise
        sock = cls(session, ws)
        if handshake:
            try:
                hello = await sock.recv()
                assert hello["event"] == "pusher:connection_established", hello
            except BaseException:
                await sock.close()
                raise
            data = json.loads(hello["data"])
            sock.socket_id = data["socket_id"]
            sock.activity_timeout = data["activity_timeout"]
        return sock

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()

    async def __aenter__(self) -> PusherSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        frame: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        await self.ws.send_str(json.dumps(frame))

    async def send_raw(self, text: str) -> None:
        await self.ws.send_str(text)

    async def recv(self, timeout: float = 3.0) -> dict[str, Any]:
        """The next frame as a stock Pusher client reads it: without the position fields
        (``epoch``, ``serial``, ``replayed``) that Clarion adds to events kept in history."""
        frame = await self.recv_raw(timeout)
        for extension in POSITION_FIELDS:
            frame.pop(extension, None)
        return frame

    async def recv_raw(self, timeout: float = 3.0) -> dict[str, Any]:
        """The next frame with every field the server sent."""
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type!r} {msg.data!r} {msg.extra!r}")
        frame: dict[str, Any] = json.loads(msg.data)
        return frame

    async def expect(self, event: str, channel: str | None = None, timeout: float = 3.0) -> dict[str, Any]:
        """The next frame, which must be ``event`` (on ``channel``)."""
        frame = await self.recv(timeout)
        assert frame["event"] == event, frame
        if channel is not None:
            assert frame.get("channel") == channel, frame
        return frame

    async def nothing(self, within: float = 0.3) -> None:
        """Assert no frame arrives for ``within`` seconds."""
        try:
            msg = await self.ws.receive(timeout=within)
        except TimeoutError:
            return
        raise AssertionError(f"expected silence, got {msg.type!r} {msg.data!r}")

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close; return the close code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await self.ws.receive(timeout=deadline - time.monotonic())
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return self.ws.close_code if msg.type is not aiohttp.WSMsgType.CLOSE else msg.data
            if msg.type is aiohttp.WSMsgType.ERROR:
                return self.ws.close_code
        raise AssertionError("server did not close the socket")

    async def subscribe(self, channel: str, **signing: Any) -> dict[str, Any]:
        """Subscribe (as ``send_subscribe``) and return the server's answer."""
        await self.send_subscribe(channel, **signing)
        return await self.recv()

    async def send_subscribe(
        self,
        channel: str,
        *,
        key: str | None = None,
        secret: str | None = None,
        channel_data: dict[str, Any] | None = None,
        auth: str | None = None,
    ) -> None:
        """Send the subscribe (signed with key/secret when given), leaving the answer unread."""
        data: dict[str, Any] = {"channel": channel}
        encoded = json.dumps(channel_data) if channel_data is not None else None
        if auth is None and key is not None and secret is not None:
            auth = signatures.channel_auth(key, secret, self.socket_id, channel, encoded)
        if auth is not None:
            data["auth"] = auth
        if encoded is not None:
            data["channel_data"] = encoded
        await self.send("pusher:subscribe", data)

    async def send_signin(self, user_data: str, *, key: str, secret: str) -> None:
        """Send ``pusher:signin`` signed for this socket, leaving the answer unread."""
        auth = signatures.user_auth(key, secret, self.socket_id, user_data)
        await self.send("pusher:signin", {"auth": auth, "user_data": user_data})


def signed_query(
    key: str, secret: str, method: str, path: str, body: bytes = b"", *, timestamp: int | None = None, **extra: str
) -> dict[str, str]:
    """Query parameters for a Pusher HTTP API request, signed as the SDKs sign them."""
    params = {
        "auth_key": key,
        "auth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "auth_version": "1.0",
        **extra,
    }
    if body:
        params["body_md5"] = hashlib.md5(body).hexdigest()
    to_sign = signatures.api_string_to_sign(method, path, params)
    params["auth_signature"] = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return params


async def raw_request(
    base_url: str, method: str, path: str, params: dict[str, str], body: bytes = b""
) -> tuple[int, Any]:
    """Send exactly these query parameters and body; returns (status, parsed JSON or text)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, base_url + path, params=params, data=body or None, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def api_call(
    base_url: str,
    key: str,
    secret: str,
    method: str,
    path: str,
    body: Any = None,
    **extra: str,
) -> tuple[int, Any]:
    """A signed HTTP API call; returns (status, parsed JSON or text)."""
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    params = signed_query(key, secret, method, path, raw, timestamp=None, **extra)
    return await raw_request(base_url, method, path, params, raw)


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate() if asyncio.iscoroutinefunction(predicate) else predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError("condition not met in time")


Connect = Callable[..., Awaitable[PusherSocket]]
_unique = itertools.count()


def fresh(prefix: str) -> str:
    """A name no other test uses (servers are shared by a module): channels and user ids."""
    return f"{prefix}{next(_unique)}"


def payload(frame: dict[str, Any]) -> Any:
    """A frame's ``data``, decoded once more when it is the usual JSON string."""
    data = frame["data"]
    return json.loads(data) if isinstance(data, str) else data


async def expect_error(sock: PusherSocket, code: int) -> dict[str, Any]:
    """The socket's next frame is a ``pusher:error`` with ``code`` and a message; its data."""
    frame = await sock.expect("pusher:error")
    error: dict[str, Any] = payload(frame)
    assert error["code"] == code, frame
    assert isinstance(error["message"], str) and error["message"], frame
    return error


async def still_open(sock: PusherSocket) -> None:
    """The socket still answers a ping."""
    await sock.send("pusher:ping", {})
    await sock.expect("pusher:pong")
