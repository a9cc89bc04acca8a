"""Real Pusher clients for the compatibility tests, and the channel-auth endpoint they call.

``NodeClient`` runs ``node/driver.mjs`` (pusher-js 8.6.0, or laravel-echo 2.5.0 on top of it) as
a subprocess: commands go to its stdin as JSON lines, and every observation it makes (state
changes, subscription results, events) comes back on stdout as a JSON line. ``expect`` waits for
an observation matching some fields, looking first at what already arrived, so nothing is missed
between a trigger and the wait for its delivery.

``AuthEndpoint`` is the application back end that pusher-js and laravel-echo POST to: ``/auth``
(form-encoded ``socket_id`` and ``channel_name``) answers with the official ``pusher`` SDK's
``authenticate``, ``/user-auth`` (``socket_id``) with its ``authenticate_user``. Who the client is
comes from extra form fields the driver adds (``user_id``, ``user_info``, ``watchlist``), as a real
back end would know it from its session. For channels or user ids containing ``forged`` it signs
with a wrong secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pusher
from aiohttp import web

NODE_DIR = Path(__file__).resolve().parent / "node"
DRIVER = NODE_DIR / "driver.mjs"
DEFAULT_TIMEOUT = 5.0
FORGED_MARK = "forged"

Observation = dict[str, Any]
Predicate = Callable[[Observation], bool]
T = TypeVar("T")


def unique(prefix: str) -> str:
    """A channel name no other test uses: tests in a module share one server."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def sdk_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a (blocking, requests-based) SDK call off the event loop, which serves the auth
    endpoint and reads the Node clients meanwhile."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def eventually(
    probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = DEFAULT_TIMEOUT
) -> T:
    """Re-run ``probe`` until ``check`` holds for its result, for state that the protocol never
    acknowledges (an unsubscribe or a closed socket, as seen through the HTTP API)."""
    deadline = time.monotonic() + timeout
    last = await probe()
    while not check(last) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        last = await probe()
    assert check(last), f"condition still false after {timeout}s; last result: {last!r}"
    return last


def _matches(obs: Observation, predicate: Predicate | None, fields: dict[str, Any]) -> bool:
    if any(obs.get(key, _MISSING) != value for key, value in fields.items()):
        return False
    return predicate is None or bool(predicate(obs))


_MISSING = object()


class NodeClient:
    """One pusher-js (or laravel-echo) client in its own Node process."""

    def __init__(self, proc: asyncio.subprocess.Process, label: str) -> None:
        self.proc = proc
        self.label = label
        self.seen: list[Observation] = []
        self.stderr: list[str] = []
        self.socket_id: str | None = None
        self._consumed: set[int] = set()
        self._arrived = asyncio.Event()
        self._ids = itertools.count(1)
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    @classmethod
    async def start(
        cls,
        *,
        host: str,
        port: int,
        key: str,
        auth_endpoint: str,
        user_auth_endpoint: str | None = None,
        label: str = "node",
    ) -> NodeClient:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node (20+) is needed for the compatibility tests")
        if not (NODE_DIR / "node_modules" / "pusher-js").is_dir():
            raise RuntimeError(f"Node packages missing in {NODE_DIR}: run scripts/setup.sh --with-node")
        proc = await asyncio.create_subprocess_exec(
            node,
            str(DRIVER),
            "--host",
            host,
            "--port",
            str(port),
            "--key",
            key,
            "--auth-endpoint",
            auth_endpoint,
            *(["--user-auth-endpoint", user_auth_endpoint] if user_auth_endpoint else []),
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 22,
        )
        client = cls(proc, label)
        try:
            await client.expect(type="ready", timeout=15)
        except BaseException:
            await client.close()
            raise
        return client

    # -- I/O ------------------------------------------------------------------------------------

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            try:
                obs = json.loads(text)
            except ValueError:
                obs = {"type": "unparsed", "line": text}
            self.seen.append(obs)
            self._arrived.set()
        self.seen.append({"type": "exited"})
        self._arrived.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip("\n"))

    async def send(self, cmd: str, **fields: Any) -> int:
        """Send a command without waiting for its ack; returns its id."""
        assert self.proc.stdin is not None
        cmd_id = next(self._ids)
        self.proc.stdin.write((json.dumps({"cmd": cmd, "id": cmd_id, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        return cmd_id

    async def command(self, cmd: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> Observation:
        """Send a command and wait for the driver to have carried it out."""
        cmd_id = await self.send(cmd, **fields)
        ack = await self.expect(type="ack", id=cmd_id, timeout=timeout)
        assert ack["ok"], f"{self.label}: {cmd} {fields} failed in the driver: {ack.get('error')}\n{self.report()}"
        return ack

    # -- observations ---------------------------------------------------------------------------

    async def expect(
        self, predicate: Predicate | None = None, *, timeout: float = DEFAULT_TIMEOUT, **fields: Any
    ) -> Observation:
        """The first not-yet-returned observation with these field values (and satisfying
        ``predicate``), waiting up to ``timeout`` seconds for it to arrive."""
        deadline = time.monotonic() + timeout
        index = 0
        while True:
            while index < len(self.seen):
                obs = self.seen[index]
                if index not in self._consumed and _matches(obs, predicate, fields):
                    self._consumed.add(index)
                    return obs
                if obs.get("type") == "fatal":
                    raise AssertionError(f"{self.label}: the driver hit an error\n{self.report()}")
                index += 1
            if self.seen and self.seen[-1].get("type") == "exited":
                raise AssertionError(f"{self.label}: driver exited while waiting for {fields}\n{self.report()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.label}: no observation matching {fields}"
                    f"{' and the predicate' if predicate else ''} within {timeout}s\n{self.report()}"
                )
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def observed(self, predicate: Predicate | None = None, **fields: Any) -> list[Observation]:
        """Every observation so far with these field values, returned by ``expect`` or not."""
        return [obs for obs in self.seen if _matches(obs, predicate, fields)]

    def events(self, channel: str | None = None, event: str | None = None) -> list[Observation]:
        fields: dict[str, Any] = {"type": "event"}
        if channel is not None:
            fields["channel"] = channel
        if event is not None:
            fields["event"] = event
        return self.observed(**fields)

    def errors(self) -> list[int | None]:
        """The codes of every pusher:error (or close code) pusher-js reported so far."""
        return [pusher_error_code(obs) for obs in self.observed(type="connection_error")]

    def report(self, last: int = 40) -> str:
        lines = [f"--- last observations of {self.label} ---"]
        lines += [json.dumps(obs) for obs in self.seen[-last:]]
        lines.append(f"--- stderr of {self.label} (pusher-js log) ---")
        lines += self.stderr[-last:]
        return "\n".join(lines)

    # -- pusher-js shortcuts -----------------------------------------------------------------------

    async def connect(
        self,
        *,
        raw: bool = False,
        user: dict[str, Any] | None = None,
        auth_params: dict[str, str] | None = None,
        auth_headers: dict[str, str] | None = None,
        auth_cookie: str | None = None,
    ) -> str:
        """Connect pusher-js; returns the socket_id the server gave it.

        ``user`` ({id, info?, watchlist?}) tells the test auth endpoint who this client is; a real
        app's endpoint learns it from ``auth_headers`` (a bearer or CSRF token) or ``auth_cookie``
        (a session cookie)."""
        extra: dict[str, Any] = {}
        if auth_headers:
            extra["auth_headers"] = auth_headers
        if auth_cookie:
            extra["auth_cookie"] = auth_cookie
        await self.command("connect", raw=raw, **_identity(user, auth_params), **extra)
        return await self._connected()

    async def echo_connect(
        self,
        *,
        raw: bool = False,
        user: dict[str, Any] | None = None,
        auth_params: dict[str, str] | None = None,
        **options: Any,
    ) -> str:
        """Connect laravel-echo (broadcaster 'pusher'); returns the socket_id."""
        await self.command("echo_connect", raw=raw, **_identity(user, auth_params), **options)
        return await self._connected()

    async def signin(self) -> Observation:
        """``pusher.signin()``; waits for pusher:signin_success and for the #server-to-user-
        channel pusher-js then subscribes, so events sent to the user can no longer be missed.
        Returns the signin_success observation (``user_data`` as pusher-js parsed it)."""
        await self.command("signin")
        success = await self.expect(type="signin_success")
        assert success["channel"], f"{self.label}: signed in without a user channel: {success}\n{self.report()}"
        await self.subscribed(success["channel"])
        return success

    async def _connected(self) -> str:
        obs = await self.expect(type="connected", timeout=10)
        socket_id: str = obs["socket_id"]
        self.socket_id = socket_id
        return socket_id

    async def subscribe(self, channel: str, *, wait: bool = True) -> Observation | None:
        """Subscribe with pusher-js, by default waiting until the server confirmed it (and then
        returning the subscription_succeeded observation: ``members`` on presence channels)."""
        await self.command("subscribe", channel=channel)
        if wait:
            return await self.subscribed(channel)
        return None

    async def subscribed(self, channel: str, timeout: float = DEFAULT_TIMEOUT) -> Observation:
        obs = await self.expect(
            lambda o: o["type"] in ("subscription_succeeded", "subscription_error"), channel=channel, timeout=timeout
        )
        assert obs["type"] == "subscription_succeeded", f"{self.label}: subscribing failed: {obs}\n{self.report()}"
        return obs

    async def state(self) -> str:
        return str((await self.command("state"))["state"])

    # -- lifetime -------------------------------------------------------------------------------

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


def _identity(user: dict[str, Any] | None, auth_params: dict[str, str] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if user is not None:
        fields["user"] = user
    if auth_params:
        fields["auth_params"] = auth_params
    return fields


def pusher_error_code(obs: Observation) -> int | None:
    """The code of a ``connection_error`` observation that reports a pusher:error frame (or a
    close code, which pusher-js reports the same way)."""
    error = obs.get("error")
    if isinstance(error, dict) and error.get("type") == "PusherError" and isinstance(error.get("data"), dict):
        code = error["data"].get("code")
        return int(code) if code is not None else None
    return None


class AuthEndpoint:
    """The app back end's auth routes, signing with the official SDK.

    ``POST /auth`` authorizes channels. For presence channels the member is the form's ``user_id``
    (``anon-<socket_id>`` without one) and ``user_info`` (JSON; default ``{"id": user_id}``);
    ``user_id_type=int`` sends a numeric id as Laravel apps do, and ``channel_data=none`` answers
    without channel_data (for a signed-in user, whose user_data then identifies it).

    ``POST /user-auth`` authenticates users (``pusher.signin()``): ``user_data`` is
    ``{"id": user_id, "user_info"?: ..., "watchlist"?: [...]}``; refused (403) without a user_id.
    """

    def __init__(self, *, app_id: str, key: str, secret: str, host: str, port: int, master_key_b64: str) -> None:
        common = {"app_id": app_id, "key": key, "host": host, "port": port, "ssl": False}
        # Also the SDK to trigger with on private-encrypted channels: it holds the master key.
        self.sdk = pusher.Pusher(secret=secret, encryption_master_key_base64=master_key_b64, **common)
        self.forger = pusher.Pusher(secret="not-" + secret, encryption_master_key_base64=master_key_b64, **common)
        self.requests: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/auth", self._auth)
        app.router.add_post("/user-auth", self._user_auth)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/auth"
        self.user_auth_url = f"http://{host}:{port}/user-auth"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _auth(self, request: web.Request) -> web.Response:
        form = await request.post()
        socket_id = form.get("socket_id")
        channel = form.get("channel_name")
        self.requests.append(
            {
                "path": request.path,
                "content_type": request.content_type,
                "socket_id": socket_id,
                "channel_name": channel,
                "form": dict(form),
            }
        )
        if not isinstance(socket_id, str) or not isinstance(channel, str):
            return web.json_response({"error": "socket_id and channel_name are required"}, status=400)
        signer = self.forger if FORGED_MARK in channel else self.sdk
        custom_data: dict[str, Any] | None = None
        if channel.startswith("presence-") and form.get("channel_data") != "none":
            user_id: str | int = str(form.get("user_id") or f"anon-{socket_id}")
            user_info = _json_field(form, "user_info", {"id": user_id})
            if form.get("user_id_type") == "int":
                user_id = int(user_id)
            custom_data = {"user_id": user_id, "user_info": user_info}
        try:
            payload = signer.authenticate(channel=channel, socket_id=socket_id, custom_data=custom_data)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=403)
        # The SDK gives the encrypted channels' shared_secret as base64 bytes.
        answer = {k: v.decode() if isinstance(v, bytes) else v for k, v in payload.items()}
        return web.json_response(answer)

    async def _user_auth(self, request: web.Request) -> web.Response:
        form = await request.post()
        socket_id = form.get("socket_id")
        user_id = form.get("user_id")
        self.requests.append(
            {
                "path": request.path,
                "content_type": request.content_type,
                "socket_id": socket_id,
                "channel_name": None,
                "form": dict(form),
            }
        )
        if not isinstance(socket_id, str) or not isinstance(user_id, str) or not user_id:
            return web.json_response({"error": "not logged in"}, status=403)
        user_data: dict[str, Any] = {"id": user_id}
        if "user_info" in form:
            user_data["user_info"] = _json_field(form, "user_info", None)
        if "watchlist" in form:
            user_data["watchlist"] = _json_field(form, "watchlist", [])
        signer = self.forger if FORGED_MARK in user_id else self.sdk
        try:
            payload = signer.authenticate_user(socket_id, user_data)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=403)
        return web.json_response(payload)


def _json_field(form: Any, name: str, default: Any) -> Any:
    raw = form.get(name)
    return json.loads(raw) if isinstance(raw, str) else default
