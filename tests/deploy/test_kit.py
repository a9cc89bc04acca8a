"""The operator's kit in deploy/: each file checked by the real tool that reads it, where one runs here.

- nginx: the shipped config (only its paths, ports and the upstream's port rewritten) passes
  ``nginx -t``, then runs in front of a real ``clarion serve`` configured from
  deploy/clarion.env.example: a WebSocket over TLS, an event published over HTTPS, /health and
  the client's address (X-Forwarded-For) all go through it.
- systemd: ``systemd-analyze verify`` and ``security --offline`` on the units.
- Docker: no daemon runs here, so the compose file is parsed and each health check command is
  run against the real process it checks; the Dockerfile's instructions are read and checked
  against the repository and scripts/setup.sh.
- The environment examples: every variable is one the code reads, and the files load.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yaml

from clarion.broadcasting import commands as broadcast_commands
from clarion.server import http_api
from clarion.server.config import APP_ENV, IDENTITY_ENV, SERVER_ENV, load_settings
from conftest import ROOT, RunningServer, run_server, stop_process
from pusherclient import PusherSocket, signed_query, wait_for
from redisproc import free_port

DEPLOY = ROOT / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
CLARION = Path(sys.executable).parent / "clarion"
CONFIG_DOC = (ROOT / "docs" / "configuration.md").read_text()
CLARION_VARIABLES = {*SERVER_ENV, *APP_ENV, *IDENTITY_ENV, "CLARION_CONFIG"}
BROADCAST_VARIABLES = {broadcast_commands.ENV_DRIVER, broadcast_commands.ENV_REDIS, broadcast_commands.ENV_PREFIX}


def env_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """An EnvironmentFile's assignments, and the names of those left commented out (``#NAME=``)."""
    active: dict[str, str] = {}
    commented: list[str] = []
    for line in path.read_text().splitlines():
        if match := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            active[match[1]] = match[2]
        elif match := re.fullmatch(r"#\s?([A-Z][A-Z0-9_]*)=.*", line):
            commented.append(match[1])
        else:
            assert line == "" or line.startswith("#"), f"{path.name}: not an assignment or a comment: {line!r}"
    return active, commented


def unit(path: Path) -> dict[str, list[str]]:
    """A unit file's ``[Service]``-and-other settings, every value of each key in order."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


# --- the environment examples -------------------------------------------------------------------


def test_every_variable_of_the_server_env_example_is_a_documented_setting_and_the_file_loads() -> None:
    active, commented = env_file(DEPLOY / "clarion.env.example")
    names = [*active, *commented]
    assert {"CLARION_WORKERS", "CLARION_SHUTDOWN_TIMEOUT", "CLARION_FD_RESERVE", "CLARION_TRUSTED_PROXIES"} <= set(
        active
    )
    for name in names:
        assert name in CLARION_VARIABLES, f"{name} is read by no code"
        assert f"`{name}`" in CONFIG_DOC, f"{name} is not in docs/configuration.md"
    settings = load_settings(environ={**active, "CLARION_ADMIN_TOKEN": "x" * 32})
    assert not settings.dev_app and settings.workers == int(active["CLARION_WORKERS"])
    assert settings.log_format == "json" and settings.scaling == "redis"


def test_every_variable_of_the_broadcast_worker_env_example_is_one_it_reads() -> None:
    active, commented = env_file(DEPLOY / "systemd" / "clarion-broadcasts.env.example")
    assert set(active) | set(commented) == BROADCAST_VARIABLES
    server, _ = env_file(DEPLOY / "clarion.env.example")
    # The worker signs with the server's app and posts to the server's own port.
    driver = active[broadcast_commands.ENV_DRIVER]
    assert driver == (
        f"pusher://{server['CLARION_APP_KEY']}:{server['CLARION_APP_SECRET']}"
        f"@{server['CLARION_HOST']}:{server['CLARION_PORT']}/{server['CLARION_APP_ID']}"
    )


# --- systemd ------------------------------------------------------------------------------------


UNITS = ["clarion.service", "clarion-broadcasts.service"]


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verifies_the_unit_without_a_warning(name: str, tmp_path: Path) -> None:
    text = (DEPLOY / "systemd" / name).read_text()
    assert "ExecStart=/opt/clarion/.venv/bin/clarion " in text
    # verify checks that ExecStart's binary exists: the installed clarion stands in for /opt/clarion's.
    (tmp_path / name).write_text(text.replace("/opt/clarion/.venv/bin/clarion", str(CLARION)))
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    # The same check fails on a unit whose binary is missing (so the rewrite above is what passes).
    (tmp_path / "missing.service").write_text(text)
    missing = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(tmp_path / "missing.service")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode != 0 and "is not executable" in missing.stderr


@pytest.mark.parametrize("name", UNITS)
def test_the_unit_runs_with_least_privilege(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text((DEPLOY / "systemd" / name).read_text().replace("/opt/clarion/.venv/bin/clarion", str(CLARION)))
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert exposure, done.stdout + done.stderr
    # systemd's scale: 0 (locked down) to 10 (unprotected); below 2 it calls the service "OK".
    assert float(exposure[1]) < 2.0, done.stdout
    settings = unit(path)
    assert settings["DynamicUser"] == ["yes"] and settings["CapabilityBoundingSet"] == [""]
    assert settings["NoNewPrivileges"] == ["yes"] and settings["ProtectSystem"] == ["strict"]


def test_the_server_unit_fits_the_descriptor_limit_and_the_shutdown_timeout() -> None:
    settings = unit(DEPLOY / "systemd" / "clarion.service")
    env, _ = env_file(DEPLOY / "clarion.env.example")
    assert settings["EnvironmentFile"] == ["/etc/clarion/clarion.env"]
    nofile = int(settings["LimitNOFILE"][0])
    # Each worker's capacity is LimitNOFILE - CLARION_FD_RESERVE; the node ceiling must fit under it,
    # or Clarion warns at start and the ceiling is never reached.
    assert nofile - int(env["CLARION_FD_RESERVE"]) >= int(env["CLARION_MAX_NODE_CONNECTIONS"])
    # docs/operations/deploys.md: a stop timeout above CLARION_SHUTDOWN_TIMEOUT + 15 s; the spread
    # is at most half the timeout.
    assert seconds(settings["TimeoutStopSec"][0]) > float(env["CLARION_SHUTDOWN_TIMEOUT"]) + 15
    assert float(env["CLARION_SHUTDOWN_SPREAD"]) <= float(env["CLARION_SHUTDOWN_TIMEOUT"]) / 2
    # SIGTERM to the supervisor alone, which forwards it to its workers and waits for them.
    assert settings["KillMode"] == ["mixed"] and settings["KillSignal"] == ["SIGTERM"]
    assert settings["ExecStart"] == ["/opt/clarion/.venv/bin/clarion serve"]
    # The raise of the soft limit (setrlimit) and the workers (fork, exec) stay allowed.
    assert "@system-service" in settings["SystemCallFilter"]


def test_the_broadcast_unit_runs_the_worker_with_its_own_environment() -> None:
    settings = unit(DEPLOY / "systemd" / "clarion-broadcasts.service")
    assert settings["EnvironmentFile"] == ["/etc/clarion/broadcasts.env"]
    args = shlex.split(settings["ExecStart"][0])
    assert args[:2] == ["/opt/clarion/.venv/bin/clarion", "broadcast-worker"]
    # Without its environment file the worker stops at the missing driver URL, which it checks
    # only once every flag the unit passes has been parsed (an unknown one stops argparse first).
    env = {k: v for k, v in os.environ.items() if k != broadcast_commands.ENV_DRIVER}
    done = subprocess.run([str(CLARION), *args[1:]], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "give the driver URL" in done.stderr, done.stderr
    assert seconds(settings["TimeoutStopSec"][0]) >= 10 and settings["KillMode"] == ["mixed"]


# --- nginx --------------------------------------------------------------------------------------


@dataclass
class Proxy:
    clarion: RunningServer
    tls_port: int
    http_port: int
    context: ssl.SSLContext
    origin: str
    log: Path

    def wss(self) -> str:
        return f"wss://127.0.0.1:{self.tls_port}/app/{self.clarion.key}?protocol=7&client=js&version=8.4.0"


def render_nginx(tmp: Path, cert: Path, key: Path, upstreams: list[int], tls_port: int, http_port: int) -> Path:
    """deploy/nginx/clarion.conf with its paths in ``tmp``, its ports free ones, its upstream the
    test's Clarion nodes; everything else as shipped. Each rewrite must find its directive."""
    text = (DEPLOY / "nginx" / "clarion.conf").read_text()
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    temp = " ".join(f"{kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    rewrites = [
        (r"(?m)^user \S+;", f"user {user};", 1),
        (r"(?m)^worker_processes \S+;", "worker_processes 1;", 1),
        (r"(?m)^pid \S+;", f"pid {tmp / 'nginx.pid'};", 1),
        (r"(?m)^error_log \S+", f"error_log {tmp / 'error.log'}", 1),
        (r"access_log \S+", f"access_log {tmp / 'access.log'}", 1),
        (r"(?m)^http \{", "http {\n    " + temp, 1),
        (r"ssl_certificate +\S+;", f"ssl_certificate {cert};", 1),
        (r"ssl_certificate_key +\S+;", f"ssl_certificate_key {key};", 1),
        (r"server 127\.0\.0\.1:6001;", " ".join(f"server 127.0.0.1:{port};" for port in upstreams), 1),
        (r"listen \[::\]:\d+( ssl)?;\n", "", 2),
        (r"listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;", 1),
        (r"listen 80;", f"listen 127.0.0.1:{http_port};", 1),
    ]
    for pattern, replacement, count in rewrites:
        text, made = re.subn(pattern, replacement.replace("\\", "\\\\"), text)  # taken literally
        assert made == count, f"{pattern!r} found {made} times in deploy/nginx/clarion.conf"
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


def nginx_test(conf: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True, timeout=30)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running_nginx(tmp: Path, cert: Path, key: Path, upstreams: list[int]) -> Iterator[tuple[int, int]]:
    """nginx on two free ports (chosen again if another process took one meanwhile)."""
    for _ in range(5):
        tls_port, http_port = free_port(), free_port()
        conf = render_nginx(tmp, cert, key, upstreams, tls_port, http_port)
        checked = nginx_test(conf, tmp)
        assert checked.returncode == 0, checked.stderr
        proc = subprocess.Popen(
            [NGINX, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 10
        while proc.poll() is None and not (port_open(tls_port) and port_open(http_port)):
            assert time.monotonic() < deadline, "nginx did not listen within 10 s"
            time.sleep(0.05)
        if proc.poll() is None:
            break
        assert "Address already in use" in (proc.stderr.read() if proc.stderr else ""), "nginx stopped"
    else:
        raise AssertionError("no free ports for nginx after 5 tries")
    try:
        yield tls_port, http_port
    finally:
        stop_process(proc)


def certificate(tmp: Path) -> tuple[Path, Path, ssl.SSLContext]:
    """A throwaway certificate chain and key for nginx, and a client context that trusts it."""
    authority = trustme.CA()
    issued = authority.issue_cert("ws.example.com", "127.0.0.1")
    cert, key = tmp / "fullchain.pem", tmp / "privkey.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return cert, key, client


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """A real clarion serve with deploy/clarion.env.example's settings (one worker on a free port,
    one socket per client address so the address it sees is what is tested), behind nginx."""
    tmp = tmp_path_factory.mktemp("nginx")
    cert, key, client = certificate(tmp)
    example, _ = env_file(DEPLOY / "clarion.env.example")
    # Where and how many are the test's to choose (free port, its own Redis prefix); the rest is
    # the example's: the app, origins, Redis scaling, JSON logs, trusted proxies, no exemption.
    for name in ("CLARION_HOST", "CLARION_PORT", "CLARION_SCALING_PREFIX", "CLARION_WORKERS"):
        example.pop(name)
    env = {**example, "CLARION_IP_MAX_CONNECTIONS": "1", "CLARION_IP_CONNECTION_RATE": "0"}
    with run_server(env=env) as clarion, running_nginx(tmp, cert, key, [clarion.port]) as (tls_port, http_port):
        origin = example["CLARION_ALLOWED_ORIGINS"].split(",")[0]
        yield Proxy(clarion, tls_port, http_port, client, origin, tmp / "access.log")


def test_the_shipped_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    cert, key, _ = certificate(tmp_path)
    conf = render_nginx(tmp_path, cert, key, [6001], free_port(), free_port())
    done = nginx_test(conf, tmp_path)
    assert done.returncode == 0 and "test is successful" in done.stderr, done.stderr
    # And it would catch a broken one: a WebSocket header without its value.
    conf.write_text(conf.read_text().replace("proxy_set_header Upgrade $http_upgrade;", "proxy_set_header Upgrade;"))
    assert nginx_test(conf, tmp_path).returncode != 0


def test_nginx_sizes_descriptors_timeouts_and_bodies_for_clarion() -> None:
    text = (DEPLOY / "nginx" / "clarion.conf").read_text()
    env, _ = env_file(DEPLOY / "clarion.env.example")

    def directive(name: str) -> str:
        found = re.findall(rf"(?m)^\s*{name} ([^;]+);", text)
        assert len(found) == 1, f"{name}: {found}"
        return str(found[0])

    # Two descriptors per proxied WebSocket (client and upstream).
    assert int(directive("worker_rlimit_nofile")) >= 2 * int(directive("worker_connections"))
    # A healthy idle socket is silent at most activity_timeout + pong_timeout.
    idle = float(env["CLARION_ACTIVITY_TIMEOUT"]) + float(env["CLARION_PONG_TIMEOUT"])
    assert seconds(directive("proxy_read_timeout")) > idle
    assert seconds(directive("proxy_read_timeout")) >= 120  # pusher-js's own activity timeout
    # Room for the largest HTTP API body the example's app takes (POST batch_events).
    apps = load_settings(environ=env).apps
    assert directive("client_max_body_size") == "1m" and http_api.largest_body(apps) <= 1024 * 1024
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text


async def open_through(proxy: Proxy, source: str, headers: dict[str, str] | None = None) -> PusherSocket:
    """A Pusher socket over TLS through nginx, from the loopback address ``source``, with the
    Origin the example allows."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), ssl=proxy.context)
    session = aiohttp.ClientSession(connector=connector)
    try:
        ws = await session.ws_connect(proxy.wss(), autoping=False, origin=proxy.origin, headers=headers or {})
    except BaseException:
        await session.close()
        raise
    sock = PusherSocket(session, ws)
    try:
        hello = await sock.recv()
        assert hello["event"] == "pusher:connection_established", hello
        sock.socket_id = json.loads(hello["data"])["socket_id"]
    except BaseException:
        await sock.close()
        raise
    return sock


async def upgrade_status(proxy: Proxy, source: str, headers: dict[str, str] | None = None) -> int:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), ssl=proxy.context)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with session.ws_connect(proxy.wss(), origin=proxy.origin, headers=headers or {}):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def https(proxy: Proxy, method: str, path: str, body: bytes = b"", **params: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"https://127.0.0.1:{proxy.tls_port}{path}",
            params=params,
            data=body or None,
            headers={"Content-Type": "application/json"} if body else {},
            ssl=proxy.context,
            allow_redirects=False,
        ) as response,
    ):
        text = await response.text()
        return response.status, json.loads(text) if "json" in response.content_type else text


async def test_a_websocket_through_nginx_over_tls_is_established_and_gets_an_event_published_over_https(
    proxy: Proxy,
) -> None:
    # HTTP requests first: nginx keeps their upstream connection and sends the upgrade on it.
    for _ in range(3):
        assert (await https(proxy, "GET", "/health"))[0] == 200
    sock = await open_through(proxy, "127.0.0.11")
    try:
        assert (await sock.subscribe("kit-news"))["event"] == "pusher_internal:subscription_succeeded"
        await sock.send("pusher:ping", {})
        assert (await sock.recv())["event"] == "pusher:pong"
        path = f"/apps/{proxy.clarion.app_id}/events"
        body = json.dumps({"name": "deployed", "channel": "kit-news", "data": '{"ok":true}'}).encode()
        params = signed_query(proxy.clarion.key, proxy.clarion.secret, "POST", path, body)
        status, answer = await https(proxy, "POST", path, body, **params)
        assert status == 200, answer
        event = await sock.expect("deployed", "kit-news")
        assert json.loads(event["data"]) == {"ok": True}
    finally:
        await sock.close()


async def test_health_and_ready_pass_through_nginx_and_metrics_do_not(proxy: Proxy) -> None:
    assert await https(proxy, "GET", "/health") == (200, {"status": "ok"})
    assert await https(proxy, "GET", "/ready") == (200, {"status": "ready"})
    status, _ = await https(proxy, "GET", "/metrics")
    assert status == 404
    async with aiohttp.ClientSession() as session, session.get(proxy.clarion.http_url + "/metrics") as direct:
        assert direct.status == 200  # Prometheus scrapes the node itself


async def test_plain_http_is_redirected_to_https(proxy: Proxy) -> None:
    url = f"http://127.0.0.1:{proxy.http_port}/app/{proxy.clarion.key}?protocol=7"
    async with aiohttp.ClientSession() as session, session.get(url, allow_redirects=False) as response:
        assert response.status == 301
        assert response.headers["Location"].startswith("https://")


async def test_clarion_sees_each_client_address_through_nginx_and_not_a_forged_one(proxy: Proxy) -> None:
    # One WebSocket per address (CLARION_IP_MAX_CONNECTIONS=1, nothing exempt): were the client's
    # address lost at the proxy, every client would share 127.0.0.1 and the second be refused.
    first = await open_through(proxy, "127.0.0.21")
    try:
        second = await open_through(proxy, "127.0.0.22")
        await second.close()
        # The same client again is refused, whatever it writes into X-Forwarded-For itself.
        assert await upgrade_status(proxy, "127.0.0.21") == 429
        assert await upgrade_status(proxy, "127.0.0.21", {"X-Forwarded-For": "203.0.113.9"}) == 429
    finally:
        await first.close()
    await wait_for(lambda: "ip_connections" in proxy.clarion.log_text())
    # nginx logs each request without its query string (the dashboard's token may be in one).
    await wait_for(lambda: f"/app/{proxy.clarion.key}" in proxy.log.read_text())
    assert "protocol=7" not in proxy.log.read_text()


# --- compose ------------------------------------------------------------------------------------

COMPOSE = DEPLOY / "compose.yml"
APP_DIR = ROOT / "examples" / "categories"
SECRET = "s3cret-" * 6  # what deploy/.env would give


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, for the values this file uses."""
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise LookupError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}", one, value)


def services(env: dict[str, str] | None = None) -> dict[str, Any]:
    """compose.yml's services, anchors merged (PyYAML does ``<<``), variables interpolated."""
    given = {"CLARION_APP_SECRET": SECRET} if env is None else env
    loaded = yaml.safe_load(COMPOSE.read_text())["services"]
    for service in loaded.values():
        service["environment"] = {k: str(interpolate(v, given)) for k, v in service.get("environment", {}).items()}
    return dict(loaded)


def test_compose_starts_redis_clarion_the_broadcast_worker_and_the_app_each_once_what_it_needs_is_healthy() -> None:
    found = services()
    assert set(found) == {"redis", "clarion", "broadcasts", "app"}
    needs = {"redis": set(), "clarion": {"redis"}, "broadcasts": {"redis", "clarion"}, "app": {"redis", "clarion"}}
    for name, service in found.items():
        depends = service.get("depends_on", {})
        assert set(depends) == needs[name], name
        assert all(dep == {"condition": "service_healthy"} for dep in depends.values()), name
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert service["restart"] == "unless-stopped"
    # Clarion's code runs from the one image built from this repository.
    for name in ("clarion", "broadcasts", "app"):
        build = found[name]["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).is_file() and found[name]["image"] == found["clarion"]["image"]
    # The secret has no default: compose refuses to start without deploy/.env.
    with pytest.raises(LookupError, match="CLARION_APP_SECRET"):
        services(env={})


def test_compose_publishes_each_port_its_service_listens_on_to_loopback_only() -> None:
    found = services()
    clarion, app = found["clarion"], found["app"]
    assert clarion["ports"] == [f"127.0.0.1:6001:{clarion['environment']['CLARION_PORT']}"]
    command = app["command"]
    assert app["ports"] == [f"127.0.0.1:8000:{command[command.index('--port') + 1]}"]
    assert "ports" not in found["redis"] and "ports" not in found["broadcasts"]
    # The browser reaches Clarion at its published port, not at the service name.
    assert app["environment"]["CATEGORIES_WS_PORT"] == "6001"


def test_compose_settings_are_ones_the_code_reads_and_a_valid_clarion_configuration() -> None:
    found = services()
    env = found["clarion"]["environment"]
    for name in env:
        assert name in CLARION_VARIABLES and f"`{name}`" in CONFIG_DOC, name
    settings = load_settings(environ=env)
    assert not settings.dev_app and settings.scaling == "redis" and settings.workers == 2
    assert settings.redis_url == "redis://redis:6379/0"
    # Docker's stop timeout above the drain (docs/operations/deploys.md); room for descriptors.
    assert seconds(found["clarion"]["stop_grace_period"]) > settings.shutdown_timeout + 15
    nofile = found["clarion"]["ulimits"]["nofile"]
    assert nofile["soft"] == nofile["hard"] and nofile["hard"] - settings.fd_reserve >= 10_000
    driver = f"pusher://{settings.apps[0].key}:{SECRET}@clarion:{settings.port}/{settings.apps[0].id}"
    assert found["broadcasts"]["environment"] == {
        broadcast_commands.ENV_DRIVER: driver,
        broadcast_commands.ENV_REDIS: "redis://redis:6379/0",
        broadcast_commands.ENV_PREFIX: "clarion-broadcasts",
    }
    app_env = found["app"]["environment"]
    assert app_env["CLARION_BROADCAST_DRIVER"] == driver
    # The app queues in Redis where the broadcast worker drains.
    worker_env = found["broadcasts"]["environment"]
    for name in (broadcast_commands.ENV_REDIS, broadcast_commands.ENV_PREFIX):
        assert app_env[name] == worker_env[name], name
    app_settings = (APP_DIR / "categories_app" / "settings.py").read_text()
    for name in app_env:
        assert name == "CLARION_BROADCAST_DRIVER" or f'"{name}"' in app_settings, f"the app reads no {name}"
    assert "http://127.0.0.1:8000" in settings.apps[0].allowed_origins


def run_check(test: list[str], replace: dict[str, str] | None = None, env: dict[str, str] | None = None) -> int:
    """A compose or Dockerfile health check run here: ``python`` is this interpreter, and each
    ``replace`` pair rewrites the command (a port the container would use)."""
    kind, *args = test
    if kind == "CMD-SHELL":
        args = ["sh", "-c", args[0]]
    else:
        assert kind == "CMD"
        args = [sys.executable if arg == "python" else arg for arg in args]
    for old, new in (replace or {}).items():
        args = [arg.replace(old, new) for arg in args]
    return subprocess.run(args, env={**os.environ, **(env or {})}, capture_output=True, timeout=30).returncode


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str], port: int, cwd: Path = ROOT, log: Path | None = None
) -> Iterator[None]:
    with log.open("wb") if log else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            assert proc.poll() is None, f"{args[:3]} stopped" + (f":\n{log.read_text()}" if log else "")
            assert time.monotonic() < deadline, f"{args[:3]} did not listen on {port}"
            time.sleep(0.1)
        yield
    finally:
        stop_process(proc, timeout=15)


def test_each_compose_health_check_passes_against_its_service_run_here_and_fails_without_it(tmp_path: Path) -> None:
    found = services()
    closed = str(free_port())
    # Redis: the machine's, on the port the check uses by default.
    redis_check = found["redis"]["healthcheck"]["test"]
    assert run_check(redis_check) == 0
    assert run_check(redis_check, {"redis-cli": f"redis-cli -p {closed}"}) != 0
    # Clarion: compose's settings, on a free port, joined through the machine's Redis.
    env = dict(found["clarion"]["environment"])
    for name in ("CLARION_HOST", "CLARION_PORT", "CLARION_WORKERS"):
        env.pop(name)
    env["CLARION_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    clarion_check = found["clarion"]["healthcheck"]["test"]
    with run_server(env=env) as clarion:
        assert run_check(clarion_check, env={"CLARION_PORT": str(clarion.port)}) == 0
        assert run_check(clarion_check, env={"CLARION_PORT": closed}) != 0
        driver = f"pusher://{clarion.key}:{clarion.secret}@127.0.0.1:{clarion.port}/{clarion.app_id}"
        # The broadcast worker: compose's command, its metrics on a free port, a queue of its own.
        worker = found["broadcasts"]
        metrics_port = str(free_port())
        command = [arg.replace("9108", metrics_port) for arg in worker["command"]]
        worker_env = {
            **worker["environment"],
            broadcast_commands.ENV_DRIVER: driver,
            broadcast_commands.ENV_REDIS: "redis://127.0.0.1:6379/0",
            broadcast_commands.ENV_PREFIX: f"kit-{uuid.uuid4().hex[:12]}",
        }
        assert command[0] == "clarion"
        with process([str(CLARION), *command[1:]], worker_env, int(metrics_port)):
            assert run_check(worker["healthcheck"]["test"], {"9108": metrics_port}) == 0
        assert run_check(worker["healthcheck"]["test"], {"9108": metrics_port}) != 0
        # The app: compose's command on a free port, its data in tmp_path.
        app = found["app"]
        app_port = str(free_port())
        command = [arg.replace("8000", app_port).replace("0.0.0.0", "127.0.0.1") for arg in app["command"]]
        app_env = {
            **{k: v.replace("/data", str(tmp_path)) for k, v in app["environment"].items()},
            "CLARION_BROADCAST_DRIVER": driver,
            "CATEGORIES_STATIC_DIR": str(tmp_path / "no-spa"),
            "PYTHONPATH": str(APP_DIR),
        }
        assert command[:3] == ["python", "-m", "categories_app"]
        log = tmp_path / "app.log"
        with process([sys.executable, *command[1:]], app_env, int(app_port), cwd=APP_DIR, log=log):
            assert run_check(app["healthcheck"]["test"], {"8000": app_port}) == 0
        assert run_check(app["healthcheck"]["test"], {"8000": app_port}) != 0
        assert (tmp_path / "categories.db").is_file()  # migrated and seeded where compose's volume is


# --- the Dockerfile -----------------------------------------------------------------------------


@dataclass
class Instruction:
    stage: int
    name: str
    args: str


def dockerfile() -> list[Instruction]:
    """deploy/Dockerfile's instructions: continuation lines joined, comments left out."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        name, _, args = (pending + line).strip().partition(" ")
        pending = ""
        if name.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(stage, name.upper(), " ".join(args.split())))
    assert not pending, "a continued line at the end"
    return instructions


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves ``path`` (or a folder above it) out of the build context."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch(prefix, pattern):
                return True
            if pattern.startswith("**/") and any(
                fnmatch("/".join(prefix.split("/")[i:]), pattern[3:]) for i in range(len(prefix.split("/")))
            ):
                return True
    return False


def test_every_copy_in_the_dockerfile_takes_a_file_in_the_repository_or_an_earlier_stage() -> None:
    instructions = dockerfile()
    stages = [i.args.split(" AS ")[-1] if " AS " in i.args else "" for i in instructions if i.name == "FROM"]
    assert stages[:2] == ["web", "python"] and len(stages) == 3
    patterns = dockerignore()
    copies = [i for i in instructions if i.name == "COPY"]
    assert copies
    for copy in copies:
        *sources, _target = copy.args.split()
        if sources[0].startswith("--from="):
            assert sources[0].removeprefix("--from=") in stages[: copy.stage], copy
            continue
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source, patterns), f"COPY {source}: left out by .dockerignore"
    # What must not reach the image: local environments, installed packages, the app's data.
    for path in (".venv/bin/python", "clients/vue/node_modules/vue", "examples/categories/data/categories.db", ".git"):
        assert ignored(path, patterns), path


def test_the_dockerfile_runs_the_repository_setup_commands() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    runs = [i.args for i in dockerfile() if i.name == "RUN"]
    npm_ci = re.search(r"npm ci --[^)\n]*", setup)
    assert npm_ci and "npm run --silent build" in setup
    # setup.sh's order: clarion-vue installed and built, then the app's SPA (a file: dependency on it).
    expected = [
        f"cd clients/vue && {npm_ci[0]}",
        "cd clients/vue && npm run build",
        f"cd examples/categories/web && {npm_ci[0]}",
        "cd examples/categories/web && npm run build",
    ]
    assert [run for run in runs if "npm" in run] == expected
    # Python: the lock file's pins, the native fan-out required as scripts/setup.sh requires it.
    pip = [run for run in runs if "pip install" in run]
    assert len(pip) == 1 and "-c requirements.lock" in pip[0]
    assert "CLARION_REQUIRE_NATIVE=${CLARION_REQUIRE_NATIVE:-1}" in setup
    envs = [i.args for i in dockerfile() if i.name == "ENV"]
    assert "CLARION_REQUIRE_NATIVE=1" in envs
    # The extras it installs hold the app's and the broadcast worker's packages.
    pyproject = (ROOT / "pyproject.toml").read_text()
    extras = re.search(r'"\.\[(.+)\]"', pip[0])
    assert extras
    for extra in extras[1].split(","):
        assert re.search(rf"(?m)^{extra} = \[", pyproject), extra


def test_the_image_runs_clarion_as_a_user_of_its_own_with_a_health_check_on_health(tmp_path: Path) -> None:
    instructions = dockerfile()
    final = [i for i in instructions if i.stage == instructions[-1].stage]
    users = [i.args for i in final if i.name == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:")
    assert any("useradd --system --user-group --uid 10001" in i.args and users[-1] in i.args for i in final)
    assert [json.loads(i.args) for i in final if i.name == "CMD"] == [["clarion", "serve"]]
    environment = " ".join(i.args for i in final if i.name == "ENV")
    for name in re.findall(r"\b(CLARION_[A-Z_]+)=", environment):
        assert name in CLARION_VARIABLES, name
    app_settings = (APP_DIR / "categories_app" / "settings.py").read_text()
    for name in re.findall(r"\b(CATEGORIES_[A-Z_]+)=", environment):
        assert f'"{name}"' in app_settings, name
    (health,) = [i.args for i in final if i.name == "HEALTHCHECK"]
    test = json.loads(health.split(" CMD ", 1)[1])
    assert "/health" in " ".join(test)
    with run_server() as clarion:
        assert run_check(["CMD", *test], env={"CLARION_PORT": str(clarion.port)}) == 0
    assert run_check(["CMD", *test], env={"CLARION_PORT": str(free_port())}) != 0


async def metric(server: RunningServer, name: str, **labels: str) -> float:
    """One sample of ``/metrics``, read from the node itself (0 when it has none yet)."""
    async with aiohttp.ClientSession() as session, session.get(server.http_url + "/metrics") as response:
        text = await response.text()
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    found = re.search(rf"(?m)^{name}\{{{wanted}\}} (\S+)$", text)
    return float(found[1]) if found else 0.0


async def test_an_upgrade_refused_by_a_full_node_goes_to_the_next_node(tmp_path: Path) -> None:
    cert, key, client = certificate(tmp_path)
    with (
        run_server(env={"CLARION_MAX_NODE_CONNECTIONS": "1"}) as full,
        run_server() as other,
        running_nginx(tmp_path, cert, key, [full.port, other.port]) as (tls_port, http_port),
    ):
        held = await PusherSocket.open(full.ws_url())  # the full node's one socket
        proxy = Proxy(other, tls_port, http_port, client, "https://app.example.com", tmp_path / "access.log")
        opened = []
        try:
            # Round robin sends the first or second upgrade to the full node, which answers 503;
            # nginx passes that upgrade on, so every client connects.
            for index in range(4):
                opened.append(await open_through(proxy, f"127.0.0.{31 + index}"))
            assert await metric(full, "clarion_connections_refused_total", code="503") >= 1
        finally:
            for sock in [held, *opened]:
                await sock.close()
