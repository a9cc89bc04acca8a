"""Fixtures for the compatibility tests: the channel-auth endpoint and real Node clients."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from compat.nodeclient import AuthEndpoint, NodeClient

# 32 bytes, base64: the app back end's encryption master key for private-encrypted channels.
MASTER_KEY_B64 = base64.b64encode(bytes(range(1, 33))).decode()

ClientFactory = Callable[..., Awaitable[NodeClient]]


@pytest.fixture
async def auth_endpoint(server) -> AsyncIterator[AuthEndpoint]:
    endpoint = AuthEndpoint(
        app_id=server.app_id,
        key=server.key,
        secret=server.secret,
        host=server.host,
        port=server.port,
        master_key_b64=MASTER_KEY_B64,
    )
    await endpoint.start()
    try:
        yield endpoint
    finally:
        await endpoint.close()


@pytest.fixture
async def node_client(server, auth_endpoint) -> AsyncIterator[ClientFactory]:
    """Start Node driver processes (not yet connected) for ``server``; all are killed after the test."""
    started: list[NodeClient] = []

    async def start(label: str | None = None, *, key: str | None = None) -> NodeClient:
        client = await NodeClient.start(
            host=server.host,
            port=server.port,
            key=key or server.key,
            auth_endpoint=auth_endpoint.url,
            user_auth_endpoint=auth_endpoint.user_auth_url,
            label=label or f"client{len(started) + 1}",
        )
        started.append(client)
        return client

    try:
        yield start
    finally:
        for client in started:
            await client.close()
