"""TLS on the one port (``CLARION_TLS_CERT``/``CLARION_TLS_KEY``): WebSockets (wss) and the HTTP
API (https) both work through the front door, and a plain-text client gets nowhere."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from pusherclient import signed_query


@pytest.fixture
def tls_server(server_factory: Any, tmp_path: Path) -> tuple[Any, ssl.SSLContext]:
    authority = trustme.CA()
    cert = authority.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    server = server_factory(env={"CLARION_TLS_CERT": str(cert_path), "CLARION_TLS_KEY": str(key_path)})
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return server, client


async def test_wss_connects_subscribes_and_receives_an_https_triggered_event(tls_server) -> None:
    server, context = tls_server
    base = f"https://{server.host}:{server.port}"
    async with aiohttp.ClientSession() as session:
        url = f"wss://{server.host}:{server.port}/app/{server.key}?protocol=7"
        async with session.ws_connect(url, ssl=context) as ws:
            hello = json.loads(await ws.receive_str(timeout=3))
            assert hello["event"] == "pusher:connection_established"
            await ws.send_str(json.dumps({"event": "pusher:subscribe", "data": {"channel": "tls-news"}}))
            assert json.loads(await ws.receive_str(timeout=3))["event"] == "pusher_internal:subscription_succeeded"
            body = json.dumps({"name": "hello", "channel": "tls-news", "data": '{"n":1}'}).encode()
            path = f"/apps/{server.app_id}/events"
            params = signed_query(server.key, server.secret, "POST", path, body)
            async with session.post(base + path, params=params, data=body, ssl=context) as response:
                assert response.status == 200, await response.text()
            event = json.loads(await ws.receive_str(timeout=3))
            assert (event["event"], event["data"]) == ("hello", '{"n":1}')
        async with session.get(base + "/health", ssl=context) as response:
            assert response.status == 200


async def test_plain_http_to_the_tls_port_gets_no_answer_and_the_port_keeps_serving(tls_server) -> None:
    server, context = tls_server
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://{server.host}:{server.port}/health") as response:
                await response.read()
        async with session.get(f"https://{server.host}:{server.port}/health", ssl=context) as response:
            assert response.status == 200
