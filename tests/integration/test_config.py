"""Starting ``clarion serve``: settings refused at start, the development app, TOML apps, env over TOML."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from pusherclient import PusherSocket, api_call, wait_for

START_TIMEOUT = 20  # seconds for a refused start to exit; a server that starts instead is killed


def base_env(**extra: str) -> dict[str, str]:
    """The parent's environment without any CLARION_ setting, on loopback and a free port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update({"CLARION_HOST": "127.0.0.1", "CLARION_PORT": "0", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


APP_ENV = {"CLARION_APP_ID": "42", "CLARION_APP_KEY": "cfg-key", "CLARION_APP_SECRET": "cfg-secret"}


def serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m clarion serve``; it must exit by itself (refused settings)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "clarion", "serve", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"clarion serve did not exit (it should have refused to start):\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_refused(result: subprocess.CompletedProcess[str], *patterns: str) -> None:
    """Exit code 2, nothing served, and stderr matching every pattern (case-insensitive)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "listening on" not in result.stdout + result.stderr
    for pattern in patterns:
        assert re.search(pattern, result.stderr, re.IGNORECASE), (pattern, result.stderr)


# --- refused at start ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        pytest.param({"CLARION_PORT": "abc"}, [r"\bport\b|CLARION_PORT"], id="port-not-a-number"),
        pytest.param({"CLARION_PORT": "70000"}, [r"\bport\b|CLARION_PORT"], id="port-out-of-range"),
        pytest.param(
            {"CLARION_CLIENT_EVENTS": "sometimes"}, [r"client_events|CLARION_CLIENT_EVENTS"], id="client-events"
        ),
        pytest.param({"CLARION_LOG_FORMAT": "xml"}, [r"log_format|CLARION_LOG_FORMAT"], id="log-format"),
        pytest.param({"CLARION_LOG_LEVEL": "loud"}, [r"log_level|CLARION_LOG_LEVEL"], id="log-level"),
        pytest.param(
            {"CLARION_MAX_MESSAGE_SIZE": "lots"}, [r"max_message_size|CLARION_MAX_MESSAGE_SIZE"], id="message-size"
        ),
        pytest.param({"CLARION_WORKERS": "2"}, [r"workers|CLARION_WORKERS"], id="workers-with-memory-scaling"),
        pytest.param({"CLARION_FANOUT": "turbo"}, [r"fanout|CLARION_FANOUT"], id="fanout"),
    ],
)
def test_bad_setting_from_env_exits_2_naming_it(env: dict[str, str], names: list[str]) -> None:
    assert_refused(serve(base_env(**APP_ENV, **env)), *names)


def test_app_from_env_with_only_an_id_exits_2_naming_the_missing_variables() -> None:
    result = serve(base_env(CLARION_APP_ID="42"))
    assert_refused(result, "CLARION_APP_KEY", "CLARION_APP_SECRET")


def test_development_app_on_all_interfaces_is_refused() -> None:
    result = serve(base_env(CLARION_HOST="0.0.0.0"))
    assert_refused(result, r"0\.0\.0\.0", r"development app")


def test_invalid_toml_exits_2_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[[apps]]\nid = "1\nkey = \n')
    result = serve(base_env(), "--config", str(path))
    assert_refused(result, re.escape(str(path)), r"toml")


def test_config_file_from_env_that_does_not_exist_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = serve(base_env(CLARION_CONFIG=str(missing)))
    assert_refused(result, re.escape(str(missing)))


TOML_APP = """
[[apps]]
id = "{id}"
key = "{key}"
secret = "secret-{key}"
"""


def test_toml_with_two_apps_sharing_an_id_exits_2_naming_the_id(tmp_path: Path) -> None:
    path = tmp_path / "dup.toml"
    path.write_text(TOML_APP.format(id="4242", key="one") + TOML_APP.format(id="4242", key="two"))
    result = serve(base_env(), "--config", str(path))
    assert_refused(result, r"\bid\b", "4242")


def test_toml_with_two_apps_sharing_a_key_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "dup.toml"
    path.write_text(TOML_APP.format(id="1", key="same") + TOML_APP.format(id="2", key="same"))
    result = serve(base_env(), "--config", str(path))
    assert_refused(result, r"\bkey\b", "same")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('colour = "blue"\n' + TOML_APP.format(id="1", key="k"), id="top-level"),
        pytest.param(TOML_APP.format(id="1", key="k") + 'colour = "blue"\n', id="in-app"),
    ],
)
def test_unknown_toml_key_exits_2_naming_it(tmp_path: Path, text: str) -> None:
    path = tmp_path / "extra.toml"
    path.write_text(text)
    result = serve(base_env(), "--config", str(path))
    assert_refused(result, "colour")


def test_bad_value_in_toml_exits_2_naming_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TOML_APP.format(id="1", key="k") + 'client_events = "sometimes"\n')
    result = serve(base_env(), "--config", str(path))
    assert_refused(result, "client_events")


# --- the development app ---------------------------------------------------------------------

NO_APP = {"CLARION_APP_ID": "", "CLARION_APP_KEY": "", "CLARION_APP_SECRET": ""}


async def test_development_app_starts_on_loopback_and_prints_working_credentials(server_factory) -> None:
    # No app configured and no host given: the defaults must be the loopback-only dev app.
    srv = server_factory(env={**NO_APP, "CLARION_HOST": ""})
    assert srv.host == "127.0.0.1"
    await wait_for(lambda: "new Pusher(" in srv.log_text())
    text = srv.log_text()
    found = re.search(r"app id (\S+)\s+key (\S+)\s+secret (\S+)", text)
    assert found, text
    app_id, key, secret = found.groups()
    assert f"ws://127.0.0.1:{srv.port}/app/{key}" in text
    snippet = re.search(r"new Pusher\(.*\)", text)
    assert snippet, text
    assert f"new Pusher('{key}'" in snippet[0]
    assert "wsHost: '127.0.0.1'" in snippet[0]
    assert f"wsPort: {srv.port}" in snippet[0]
    assert "forceTLS: false" in snippet[0]

    # The printed credentials are the ones the server accepts.
    async with await PusherSocket.open(srv.ws_url(key)) as sock:
        assert (await sock.subscribe("dev"))["event"] == "pusher_internal:subscription_succeeded"
        status, answer = await api_call(
            srv.http_url, key, secret, "POST", f"/apps/{app_id}/events", {"name": "hi", "channel": "dev", "data": "1"}
        )
        assert (status, answer) == (200, {})
        assert await sock.recv() == {"event": "hi", "channel": "dev", "data": "1"}


# --- apps from TOML --------------------------------------------------------------------------

TWO_APPS = """
[[apps]]
id = "100"
key = "key-a"
secret = "secret-aaaa"

[[apps]]
id = "200"
key = "key-b"
secret = "secret-bbbb"
"""

APPS = {"a": ("100", "key-a", "secret-aaaa"), "b": ("200", "key-b", "secret-bbbb")}


def trigger_body(channel: str, name: str = "e", data: str = "d") -> dict[str, Any]:
    return {"name": name, "channel": channel, "data": data}


async def test_toml_with_two_apps_serves_both_keys(server_factory) -> None:
    srv = server_factory(config=TWO_APPS)
    for app_id, key, secret in APPS.values():
        async with await PusherSocket.open(srv.ws_url(key)) as sock:
            assert sock.socket_id
            assert (await sock.subscribe("hello"))["event"] == "pusher_internal:subscription_succeeded"
            status, answer = await api_call(
                srv.http_url, key, secret, "POST", f"/apps/{app_id}/events", trigger_body("hello")
            )
            assert (status, answer) == (200, {})
            assert await sock.recv() == {"event": "e", "channel": "hello", "data": "d"}


async def test_each_toml_app_refuses_the_other_apps_secret(server_factory) -> None:
    srv = server_factory(config=TWO_APPS)
    for mine, theirs in (("a", "b"), ("b", "a")):
        app_id, key, _ = APPS[mine]
        _, other_key, other_secret = APPS[theirs]
        path = f"/apps/{app_id}/events"
        status, answer = await api_call(srv.http_url, key, other_secret, "POST", path, trigger_body("x"))
        assert status == 401, (mine, answer)
        assert isinstance(answer, dict) and answer.get("error"), answer
        status, answer = await api_call(srv.http_url, other_key, other_secret, "POST", path, trigger_body("x"))
        assert status == 401, (mine, answer)
        status, answer = await api_call(srv.http_url, key, other_secret, "GET", f"/apps/{app_id}/channels")
        assert status == 401, (mine, answer)


async def test_event_on_one_app_never_reaches_the_same_channel_name_on_another_app(server_factory) -> None:
    srv = server_factory(config=TWO_APPS)
    a_id, a_key, a_secret = APPS["a"]
    b_id, b_key, b_secret = APPS["b"]
    async with await PusherSocket.open(srv.ws_url(a_key)) as on_a, await PusherSocket.open(srv.ws_url(b_key)) as on_b:
        assert (await on_a.subscribe("news"))["event"] == "pusher_internal:subscription_succeeded"
        assert (await on_b.subscribe("news"))["event"] == "pusher_internal:subscription_succeeded"
        status, answer = await api_call(
            srv.http_url, a_key, a_secret, "POST", f"/apps/{a_id}/events", trigger_body("news", "for-a")
        )
        assert (status, answer) == (200, {})
        assert await on_a.recv() == {"event": "for-a", "channel": "news", "data": "d"}
        status, _ = await api_call(
            srv.http_url, b_key, b_secret, "POST", f"/apps/{b_id}/events", trigger_body("news", "for-b")
        )
        assert status == 200
        # B's first frame is its own event: A's never arrived.
        assert await on_b.recv() == {"event": "for-b", "channel": "news", "data": "d"}

        # Each app's channel list shows only its own sockets.
        status, answer = await api_call(
            srv.http_url, a_key, a_secret, "GET", f"/apps/{a_id}/channels/news", info="subscription_count"
        )
        assert (status, answer) == (200, {"occupied": True, "subscription_count": 1})


@pytest.mark.parametrize("fan", ["python", "native"])
async def test_either_fanout_loop_delivers_to_every_subscriber_but_the_excluded_sender(server_factory, fan) -> None:
    # The suite runs on the default (native) loop; this runs the Python one through a real server too.
    srv = server_factory(env={"CLARION_FANOUT": fan}, config=TWO_APPS)
    a_id, a_key, a_secret = APPS["a"]
    sockets = [await PusherSocket.open(srv.ws_url(a_key)) for _ in range(3)]
    try:
        for sock in sockets:
            assert (await sock.subscribe("news"))["event"] == "pusher_internal:subscription_succeeded"
        body = {**trigger_body("news", "hello"), "socket_id": sockets[0].socket_id}
        status, answer = await api_call(srv.http_url, a_key, a_secret, "POST", f"/apps/{a_id}/events", body)
        assert (status, answer) == (200, {})
        status, _ = await api_call(
            srv.http_url, a_key, a_secret, "POST", f"/apps/{a_id}/events", trigger_body("news", "second")
        )
        assert status == 200
        for sock in sockets[1:]:
            assert await sock.recv() == {"event": "hello", "channel": "news", "data": "d"}
            assert await sock.recv() == {"event": "second", "channel": "news", "data": "d"}
        # The excluded sender's first frame is the second event: the first never reached it.
        assert await sockets[0].recv() == {"event": "second", "channel": "news", "data": "d"}
    finally:
        for sock in sockets:
            await sock.close()


async def test_client_event_on_one_app_never_reaches_another_app(server_factory) -> None:
    srv = server_factory(config=TWO_APPS)
    _, a_key, a_secret = APPS["a"]
    b_id, b_key, b_secret = APPS["b"]
    async with (
        await PusherSocket.open(srv.ws_url(a_key)) as sender,
        await PusherSocket.open(srv.ws_url(a_key)) as same_app,
        await PusherSocket.open(srv.ws_url(b_key)) as other_app,
    ):
        for sock, key, secret in ((sender, a_key, a_secret), (same_app, a_key, a_secret), (other_app, b_key, b_secret)):
            answer = await sock.subscribe("private-chat", key=key, secret=secret)
            assert answer["event"] == "pusher_internal:subscription_succeeded", answer
        await sender.send("client-typing", {"who": "a"}, channel="private-chat")
        frame = await same_app.expect("client-typing", "private-chat")
        data = json.loads(frame["data"]) if isinstance(frame["data"], str) else frame["data"]
        assert data == {"who": "a"}
        status, _ = await api_call(
            srv.http_url, b_key, b_secret, "POST", f"/apps/{b_id}/events", trigger_body("private-chat", "for-b")
        )
        assert status == 200
        assert await other_app.recv() == {"event": "for-b", "channel": "private-chat", "data": "d"}


# --- environment over TOML -------------------------------------------------------------------


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port some other socket is listening on, for as long as the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def test_clarion_port_and_host_override_the_toml(server_factory, held_port: int) -> None:
    # Were the TOML used, the server could not bind (the port is taken) or would be on .2.
    srv = server_factory(
        config=f'host = "127.0.0.2"\nport = {held_port}\n' + TOML_APP.format(id="1", key="k"),
        env={"CLARION_PORT": "0", "CLARION_HOST": "127.0.0.1"},
    )
    assert srv.host == "127.0.0.1"
    assert srv.port != held_port
    status, answer = await api_call(srv.http_url, "k", "secret-k", "POST", "/apps/1/events", trigger_body("c"))
    assert (status, answer) == (200, {})


SMALL_APP = TOML_APP.format(id="1", key="k") + "max_message_size = 50\n"


async def test_toml_max_message_size_applies(server_factory) -> None:
    srv = server_factory(config=SMALL_APP)
    path = "/apps/1/events"
    status, _ = await api_call(srv.http_url, "k", "secret-k", "POST", path, trigger_body("c", data="x" * 50))
    assert status == 200
    status, _ = await api_call(srv.http_url, "k", "secret-k", "POST", path, trigger_body("c", data="x" * 51))
    assert status == 413


async def test_clarion_max_message_size_overrides_the_toml_app(server_factory) -> None:
    srv = server_factory(config=SMALL_APP, env={"CLARION_MAX_MESSAGE_SIZE": "200"})
    path = "/apps/1/events"
    status, answer = await api_call(srv.http_url, "k", "secret-k", "POST", path, trigger_body("c", data="x" * 200))
    assert (status, answer) == (200, {})
    status, _ = await api_call(srv.http_url, "k", "secret-k", "POST", path, trigger_body("c", data="x" * 201))
    assert status == 413


async def test_app_from_env_replaces_the_toml_app_with_the_same_id(server_factory) -> None:
    srv = server_factory(
        config=TOML_APP.format(id="7", key="toml-key") + TOML_APP.format(id="8", key="kept-key"),
        env={"CLARION_APP_ID": "7", "CLARION_APP_KEY": "env-key", "CLARION_APP_SECRET": "env-secret"},
    )
    body = trigger_body("c")
    assert (await api_call(srv.http_url, "env-key", "env-secret", "POST", "/apps/7/events", body))[0] == 200
    assert (await api_call(srv.http_url, "toml-key", "secret-toml-key", "POST", "/apps/7/events", body))[0] == 401
    # The other TOML app is untouched.
    assert (await api_call(srv.http_url, "kept-key", "secret-kept-key", "POST", "/apps/8/events", body))[0] == 200
    async with await PusherSocket.open(srv.ws_url("env-key")) as sock:
        assert sock.socket_id
    async with await PusherSocket.open(srv.ws_url("toml-key"), handshake=False) as sock:
        refused = await sock.recv()
        assert refused["event"] == "pusher:error"
        assert await sock.closed() == 4001
