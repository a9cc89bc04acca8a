"""The app backend's broadcasting routes made with Clarion's Python SDK (Starlette), for the tests
that cross the whole path: the SDK's Authorizer signs, clarion-vue asks, `clarion serve` checks.

Usage: sdk_backend.py CLARION_URL APP_ID KEY SECRET. Prints "listening on PORT" once it serves.
Every request is signed in as user 7, who may read ``feed.{id}`` and not ``secret.{id}``.
"""

import socket
import sys
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from clarion.broadcasting import Authorizer, Broadcaster, ChannelRoutes
from clarion.broadcasting.integrations.starlette import starlette_routes


class User:
    id = 7


def main() -> None:
    clarion_url, app_id, key, secret = sys.argv[1:5]
    where = urlsplit(clarion_url)
    broadcaster = Broadcaster(f"pusher://{key}:{secret}@{where.hostname}:{where.port}/{app_id}")
    routes = ChannelRoutes()

    @routes.channel("feed.{feed_id}")
    def feed(user: Any, feed_id: str) -> bool:
        return True

    @routes.channel("secret.{secret_id}")
    def secret_feed(user: Any, secret_id: str) -> bool:
        return False

    authorizer = Authorizer(broadcaster, routes)

    def get_user(request: Request) -> User:
        return User()

    app = Starlette(routes=[Mount("/broadcasting", routes=starlette_routes(authorizer, get_user))])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
