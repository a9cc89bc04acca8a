"""The Django test app: Django's auth with sessions and CSRF, categories in SQLite, served over
ASGI. ``setup(driver_url, db_path)`` configures Django once per test process."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

BROADCASTER: Any = None


def setup(driver_url: str, db_path: str) -> Any:
    """Configure Django, create the tables and users; returns the ASGI app."""
    global BROADCASTER
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only-not-secret",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF="sdk.djangoapp.site",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "sdk.djangoapp.apps.ShopConfig",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "clarion.broadcasting.integrations.django.SocketIdMiddleware",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_path}},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        USE_TZ=True,
    )
    import django

    django.setup()
    from django.contrib.auth.models import User as DjangoUser
    from django.core.asgi import get_asgi_application
    from django.core.management import call_command

    from clarion.broadcasting import Broadcaster
    from clarion.broadcasting.integrations.django import broadcast_model, install

    from ..domain import MASTER_KEY_B64, USERS, category_created_hook, wire
    from .models import Category, Member

    call_command("migrate", run_syncdb=True, verbosity=0)
    for login, user in USERS.items():
        django_user = DjangoUser.objects.create_user(id=user.id, username=login, password=login, first_name=user.name)
        Member.objects.create(user=django_user, tenant_id=user.tenant_id)
    BROADCASTER = Broadcaster(driver_url, master_key_base64=MASTER_KEY_B64)
    install(BROADCASTER)
    wire(BROADCASTER, "django")
    broadcast_model(BROADCASTER, Category, category_created_hook())
    return get_asgi_application()


class Abort(Exception):
    pass


def _user(request: HttpRequest) -> Any:
    return request.user if request.user.is_authenticated else None


def login_view(request: HttpRequest) -> HttpResponse:
    from django.contrib.auth import authenticate, login
    from django.middleware.csrf import get_token

    body = json.loads(request.body)
    user = authenticate(request, username=body["username"], password=body["password"])
    if user is None:
        return JsonResponse({"error": "bad login"}, status=401)
    login(request, user)
    return JsonResponse({"csrf": get_token(request)})


def categories(request: HttpRequest) -> HttpResponse:
    from .models import Category

    user = _user(request)
    if user is None or request.method != "POST":
        return JsonResponse({"error": "sign in"}, status=401)
    category = Category.objects.create(tenant_id=user.member.tenant_id, name=json.loads(request.body)["name"])
    return JsonResponse({"id": category.id})


def category(request: HttpRequest, category_id: int) -> HttpResponse:
    return _update(request, category_id, fail=False)


def category_then_fail(request: HttpRequest, category_id: int) -> HttpResponse:
    return _update(request, category_id, fail=True)


def _update(request: HttpRequest, category_id: int, fail: bool) -> HttpResponse:
    from django.db import transaction

    from ..domain import category_saved
    from .models import Category

    user = _user(request)
    if user is None or request.method != "PUT":
        return JsonResponse({"error": "sign in"}, status=401)
    try:
        with transaction.atomic():
            found = Category.objects.select_for_update().get(id=category_id, tenant_id=user.member.tenant_id)
            found.name = json.loads(request.body)["name"]
            found.save()
            category_saved.send("django", category=found)
            if fail:
                raise Abort
    except Abort:
        return JsonResponse({"error": "rolled back"}, status=409)
    return JsonResponse({"id": category_id})


def vault(request: HttpRequest) -> HttpResponse:
    from ..domain import vault_channel

    user = _user(request)
    if user is None or request.method != "POST":
        return JsonResponse({"error": "sign in"}, status=401)
    text = json.loads(request.body)["name"]
    BROADCASTER.on(vault_channel(user.member.tenant_id)).as_("SecretNote").with_({"text": text}).send_now()
    return JsonResponse({})


def _urls() -> list[Any]:
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    from clarion.broadcasting import Authorizer
    from clarion.broadcasting.integrations.django import broadcasting_urls

    from ..domain import routes

    authorizer = Authorizer(
        BROADCASTER,
        routes,
        user_id=lambda u: u.pk,
        user_info=lambda u: {"name": u.first_name},
    )
    return [
        path("login", csrf_exempt(login_view)),
        path("categories", categories),
        path("categories/<int:category_id>", category),
        path("categories/<int:category_id>/then-fail", category_then_fail),
        path("vault", vault),
        *broadcasting_urls(authorizer),
    ]


def __getattr__(name: str) -> Any:
    # Django reads urlpatterns after setup(), when the broadcaster exists.
    if name == "urlpatterns":
        return _urls()
    raise AttributeError(name)
