"""The baseline: the least a Python Pusher server can do, to measure Clarion against.

    python -m clarion.bench.baseline --port 6002
    clarion bench --compare baseline      # runs it next to Clarion

One aiohttp port, two routes, no checks:

- ``GET /app/{key}``: a WebSocket (any key) that sends ``pusher:connection_established``, accepts
  ``pusher:subscribe`` to public channels (answering ``pusher_internal:subscription_succeeded``),
  ``pusher:unsubscribe``, and answers ``pusher:ping`` with ``pusher:pong``;
- ``POST /apps/{id}/events``: parses the JSON body (no signature, no limits) and writes the event to
  every subscriber of its channel(s).

Fan-out uses the same trick as Clarion: the WebSocket frame is encoded once per event and channel,
then written to each subscriber's transport with no ``await`` per socket. Nothing else is done
(no slow-consumer cut-off, no metrics, no presence, no auth), so the difference between the two is
what Clarion's protocol coverage and safety cost. Shipped with the bench extra, so a wheel can
compare too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import struct

import orjson
from aiohttp import WSMsgType, web

CHANNELS: web.AppKey[dict[str, dict[int, asyncio.Transport]]] = web.AppKey("channels", dict)
_ids = itertools.count(1)


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked server-to-client text frame (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


PONG = text_frame(orjson.dumps({"event": "pusher:pong", "data": "{}"}))


def _event(event: str, data: str, channel: str | None = None) -> bytes:
    frame = {"event": event, "data": data} if channel is None else {"event": event, "channel": channel, "data": data}
    return text_frame(orjson.dumps(frame))


async def websocket(request: web.Request) -> web.WebSocketResponse:
    channels = request.app[CHANNELS]
    ws = web.WebSocketResponse(autoping=True, compress=False)
    await ws.prepare(request)
    transport = request.transport
    assert transport is not None
    number = next(_ids)
    hello = orjson.dumps({"socket_id": f"{os.getpid()}.{number}", "activity_timeout": 120}).decode()
    transport.write(_event("pusher:connection_established", hello))
    joined: set[str] = set()
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            try:
                frame = orjson.loads(msg.data)
                event = frame.get("event")
                data = frame.get("data") or {}
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if event == "pusher:ping":
                transport.write(PONG)
            elif event == "pusher:subscribe" and isinstance(data, dict) and isinstance(data.get("channel"), str):
                channel = data["channel"]
                if channel.startswith(("private-", "presence-")):
                    error = orjson.dumps({"code": 4009, "message": "baseline serves public channels only"}).decode()
                    transport.write(_event("pusher:error", error))
                    continue
                channels.setdefault(channel, {})[number] = transport
                joined.add(channel)
                transport.write(_event("pusher_internal:subscription_succeeded", "{}", channel))
            elif event == "pusher:unsubscribe" and isinstance(data, dict):
                channel = data.get("channel")
                if channel in joined:
                    joined.discard(channel)
                    channels[channel].pop(number, None)
    finally:
        for channel in joined:
            subscribers = channels.get(channel)
            if subscribers is not None:
                subscribers.pop(number, None)
                if not subscribers:
                    del channels[channel]
    return ws


async def events(request: web.Request) -> web.Response:
    channels = request.app[CHANNELS]
    body = orjson.loads(await request.read())
    names = body.get("channels") or [body["channel"]]
    for channel in names:
        subscribers = channels.get(channel)
        if not subscribers:
            continue
        frame = _event(body["name"], body["data"], channel)  # encoded once, written to every socket
        for transport in subscribers.values():
            if not transport.is_closing():
                transport.write(frame)
    return web.Response(body=b"{}", content_type="application/json")


def build() -> web.Application:
    app = web.Application()
    app[CHANNELS] = {}
    app.router.add_get("/app/{key}", websocket)
    app.router.add_post("/apps/{app_id}/events", events)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6002)
    args = parser.parse_args()
    web.run_app(
        build(),
        host=args.host,
        port=args.port,
        access_log=None,
        backlog=4096,
        print=lambda _: print(f"baseline: listening on http://{args.host}:{args.port}", flush=True),
    )


if __name__ == "__main__":
    main()
