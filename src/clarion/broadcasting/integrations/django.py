"""Django: the ``/broadcasting/*`` views, the ``X-Socket-ID`` middleware, broadcasting after
``transaction.on_commit``, and model broadcasting through ``post_save``/``post_delete``.

::

    # settings.py
    MIDDLEWARE = [..., "clarion.broadcasting.integrations.django.SocketIdMiddleware"]
    # urls.py
    urlpatterns = [..., *broadcasting_urls(authorizer)]
    # once at start (apps.py ready()):
    install(broadcaster)

The views use ``request.user`` (Django's auth, sessions included) and keep Django's CSRF check:
pusher-js sends the token with ``channelAuthorization: {headers: {"X-CSRFToken": token}}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.urls import URLPattern, path

from ..auth import Authorizer
from ..broadcaster import Broadcaster
from ..context import SOCKET_ID_HEADER, socket_id
from ..errors import AuthorizationRefused, BroadcastRefused, BroadcastUnavailable
from ..models import Action, ModelBroadcast

MAX_BODY = 16 * 1024


class SocketIdMiddleware:
    """Reads ``X-Socket-ID`` for ``to_others()`` during each request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with socket_id(request.headers.get(SOCKET_ID_HEADER)):
            return self.get_response(request)


def install(broadcaster: Broadcaster, using: str | None = None) -> None:
    """Hold broadcasts made inside ``transaction.atomic()`` until the commit (dropped on rollback)."""

    def defer(callback: Callable[[], None]) -> bool:
        if not transaction.get_connection(using).in_atomic_block:
            return False
        transaction.on_commit(callback, using=using)
        return True

    broadcaster.deferrers.append(defer)


def current_user(request: HttpRequest) -> Any:
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _params(request: HttpRequest) -> Mapping[str, Any]:
    if request.method == "GET":
        return dict(request.GET.dict())
    if len(request.body) > MAX_BODY:
        raise AuthorizationRefused(f"the request body must be at most {MAX_BODY} bytes", 413)
    if (request.content_type or "").startswith("application/json"):
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            raise AuthorizationRefused("the JSON body does not parse", 400) from exc
        if not isinstance(body, dict):
            raise AuthorizationRefused("the JSON body must be an object", 400)
        return body
    return dict(request.POST.dict())


def _answer(call: Callable[[], Any]) -> JsonResponse:
    try:
        return JsonResponse(call())
    except AuthorizationRefused as exc:
        return JsonResponse({"error": exc.reason}, status=exc.status)
    except BroadcastRefused as exc:
        return JsonResponse({"error": exc.reason}, status=exc.status)
    except BroadcastUnavailable as exc:
        return JsonResponse({"error": exc.reason}, status=502)


def broadcasting_urls(
    authorizer: Authorizer, prefix: str = "broadcasting/", get_user: Callable[[HttpRequest], Any] = current_user
) -> list[URLPattern]:
    def auth(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        return _answer(lambda: authorizer.authorize_sync(get_user(request), _params(request)))

    def user_auth(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        return _answer(lambda: authorizer.authenticate_user(get_user(request), _params(request)))

    def history(request: HttpRequest) -> HttpResponse:
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        return _answer(lambda: authorizer.history_sync(get_user(request), _params(request)))

    return [
        path(f"{prefix}auth", auth, name="broadcasting-auth"),
        path(f"{prefix}user-auth", user_auth, name="broadcasting-user-auth"),
        path(f"{prefix}history", history, name="broadcasting-history"),
    ]


def broadcast_model(broadcaster: Broadcaster, model: type[Any], how: ModelBroadcast) -> None:
    """Broadcast ``model``'s created/updated/deleted events (after commit, with :func:`install`)."""

    def send(instance: Any, action: Action) -> None:
        event = how.event(instance, action)
        if event is not None:
            broadcaster.broadcast(event, queued=how.queued)

    def saved(sender: Any, instance: Any, created: bool, raw: bool = False, **_: Any) -> None:
        if not raw:  # fixtures being loaded
            send(instance, "created" if created else "updated")

    def deleted(sender: Any, instance: Any, **_: Any) -> None:
        send(instance, "deleted")

    uid = f"clarion-broadcast-{model._meta.label}"
    post_save.connect(saved, sender=model, weak=False, dispatch_uid=f"{uid}-save")
    post_delete.connect(deleted, sender=model, weak=False, dispatch_uid=f"{uid}-delete")
