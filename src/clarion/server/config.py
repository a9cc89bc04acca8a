"""Settings: TOML file (``--config`` / ``CLARION_CONFIG``), then environment variables over it.

Everything from outside is validated by pydantic; a bad value stops the start with a message that
names the setting. Each setting is declared once: an app's on ``protocol.app.App`` (apps validate
straight into it), the server's on ``Settings`` below, each with its environment variable beside
it (``protocol.settings.Env``); the tables of variables here are derived from those declarations.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from ..protocol.app import App
from ..protocol.settings import Env
from .cidr import networks

DEV_APP = {"id": "1", "key": "clarion-key", "secret": "clarion-secret"}


class ConfigError(Exception):
    """A setting is wrong; the message names it."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: Annotated[str, Env()] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535), Env()] = 6001
    scaling: Annotated[Literal["memory", "redis"], Env()] = "memory"
    redis_url: Annotated[str, Env()] = "redis://127.0.0.1:6379/0"
    scaling_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_:.-]{1,64}$"), Env()] = "clarion"
    workers: Annotated[int, Field(ge=1, le=256), Env()] = 1
    tls_cert: Annotated[str | None, Env()] = None
    tls_key: Annotated[str | None, Env()] = None
    # text for people (the default); json for log shippers; auto: text on a terminal, else json
    log_format: Annotated[Literal["text", "json", "auto"], Env()] = "text"
    log_level: Annotated[Literal["debug", "info", "warning", "error"], Env()] = "info"
    # lines of one event (e.g. "connection opened") per window; past them, one summary line
    log_burst: Annotated[int, Field(ge=1, le=1_000_000), Env()] = 100
    log_window: Annotated[float, Field(ge=0.1, le=3600), Env()] = 10.0
    pong_timeout: Annotated[float, Field(gt=0, le=600), Env()] = 30.0
    handshake_timeout: Annotated[float, Field(gt=0, le=600), Env()] = 10.0
    # an HTTP API body, once its request line passed
    body_timeout: Annotated[float, Field(gt=0, le=600), Env()] = 10.0
    max_buffer: Annotated[int, Field(ge=16 * 1024), Env()] = 1024 * 1024
    loop: Annotated[Literal["uvloop", "asyncio"], Env()] = "uvloop"
    # The fan-out loop: native (C, built at install) where it was built, else python.
    fanout: Annotated[Literal["native", "python"] | None, Env()] = None
    node_ttl: Annotated[float, Field(ge=1, le=300), Env()] = 15.0
    redis_timeout: Annotated[float, Field(ge=0.05, le=60), Env()] = 2.0
    redis_health_interval: Annotated[float, Field(ge=0.1, le=60), Env()] = 1.0
    idempotency_ttl: Annotated[float, Field(ge=1, le=24 * 3600), Env()] = 300.0
    webhook_delay: Annotated[float, Field(ge=0, le=60), Env()] = 3.0
    webhook_retry_for: Annotated[float, Field(ge=0, le=24 * 3600), Env()] = 300.0
    webhook_timeout: Annotated[float, Field(gt=0, le=120), Env()] = 5.0
    webhook_queue: Annotated[int, Field(ge=10, le=10_000_000), Env()] = 10_000
    # Capacity and protection (docs/operations/capacity.md). WebSockets past capacity get 503, past
    # a per-IP limit 429, before the upgrade.
    fd_reserve: Annotated[int, Field(ge=0, le=1_000_000), Env()] = 128  # descriptors kept from WebSockets
    max_node_connections: Annotated[int | None, Field(ge=1), Env()] = None  # all apps, per worker
    ip_connection_rate: Annotated[float, Field(ge=0, le=100_000), Env()] = 20.0  # new sockets/s per IP; 0 = off
    ip_connection_burst: Annotated[int, Field(ge=1, le=1_000_000), Env()] = 50
    ip_max_connections: Annotated[int, Field(ge=0, le=10_000_000), Env()] = 500  # open sockets per IP; 0 = off
    rate_limit_exempt: Annotated[str, Env()] = "127.0.0.0/8,::1/128"  # CIDR list the per-IP limits skip
    trusted_proxies: Annotated[str, Env()] = ""  # CIDR list whose X-Forwarded-For is believed
    # Shutdown (docs/operations/deploys.md): on SIGTERM sockets get 4200 spread over this window
    # (0 = all at once); the whole shutdown, webhooks included, ends within the timeout.
    shutdown_spread: Annotated[float, Field(ge=0, le=600), Env()] = 3.0
    shutdown_timeout: Annotated[float, Field(gt=0, le=3600), Env()] = 8.0
    # The dashboard at /dashboard (server/dashboard.py): off (404) while no admin token is set.
    admin_token: Annotated[SecretStr | None, Field(min_length=16, max_length=256), Env()] = None
    dashboard_interval: Annotated[float, Field(ge=0.1, le=60), Env()] = 1.0  # seconds between samples
    dashboard_samples: Annotated[int, Field(ge=10, le=36_000), Env()] = 600  # samples kept (10 min at 1 s)
    dashboard_console_queue: Annotated[int, Field(ge=10, le=100_000), Env()] = 1000  # events per console
    apps: list[App] = Field(default_factory=list)
    dev_app: bool = False  # set when no app was configured and the development app is in use

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        for name in ("rate_limit_exempt", "trusted_proxies"):
            try:
                networks(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        seen_ids: set[str] = set()
        seen_keys: set[str] = set()
        for app in self.apps:
            if app.id in seen_ids:
                raise ValueError(f"two apps share the id {app.id!r}")
            if app.key in seen_keys:
                raise ValueError(f"two apps share the key {app.key!r}")
            seen_ids.add(app.id)
            seen_keys.add(app.key)
        return self

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _env_table(fields: Iterable[tuple[str, Iterable[Any]]]) -> dict[str, str]:
    """Environment variable → setting, from the ``Env`` marker declared on each field."""
    return {marker.variable(name): name for name, metadata in fields for marker in metadata if isinstance(marker, Env)}


def _app_fields() -> Iterable[tuple[str, Iterable[Any]]]:
    hints = get_type_hints(App, include_extras=True)
    return ((field.name, getattr(hints[field.name], "__metadata__", ())) for field in dataclasses.fields(App))


SERVER_ENV = _env_table((name, info.metadata) for name, info in Settings.model_fields.items())
APP_ENV = _env_table(_app_fields())  # each applies to every app
# The app from the environment: its identity, all three variables together.
IDENTITY_ENV = {f"CLARION_APP_{name.upper()}": name for name in ("id", "key", "secret")}
SERVER_SETTINGS = frozenset(Settings.model_fields) - {"apps", "dev_app"}
APP_SETTINGS = frozenset(field.name for field in dataclasses.fields(App))

_ENV_OF = {name: var for var, name in {**SERVER_ENV, **APP_ENV, **IDENTITY_ENV}.items()}


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "settings"
        var = next((_ENV_OF[str(part)] for part in reversed(item["loc"]) if str(part) in _ENV_OF), None)
        lines.append(f"  {where}{f' ({var})' if var else ''}: {item['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_settings(config_path: str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), apply the environment over it, and validate the result."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    path = config_path or env.get("CLARION_CONFIG")
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    for var, name in SERVER_ENV.items():
        if env.get(var, "") != "":
            raw[name] = env[var]

    apps: list[dict[str, Any]] = [dict(app) for app in raw.get("apps", []) if isinstance(app, dict)]
    if not isinstance(raw.get("apps", []), list):
        raise ConfigError("apps must be an array of tables: [[apps]]")
    env_app = {name: env.get(var, "") for var, name in IDENTITY_ENV.items()}
    if any(env_app.values()):
        missing = [var for var, name in IDENTITY_ENV.items() if not env_app[name]]
        if missing:
            raise ConfigError(f"an app from the environment needs {', '.join(missing)} too")
        apps = [app for app in apps if app.get("id") != env_app["id"]] + [env_app]
    dev_app = not apps
    if dev_app:
        apps = [dict(DEV_APP)]
    # App-level environment settings apply to every app: the environment wins over the file.
    for var, name in APP_ENV.items():
        if env.get(var, "") != "":
            for app in apps:
                app[name] = env[var]
    raw["apps"] = apps
    raw["dev_app"] = dev_app
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    if settings.dev_app and not settings.is_loopback:
        raise ConfigError(
            f"refusing to serve the development app on {settings.host}: its secret is public. "
            "Set CLARION_APP_ID, CLARION_APP_KEY and CLARION_APP_SECRET, or configure [[apps]] in a TOML file."
        )
    if settings.workers > 1 and settings.scaling == "memory":
        raise ConfigError(
            "CLARION_WORKERS > 1 needs a shared bus: set CLARION_SCALING=redis (and CLARION_REDIS_URL), "
            "or run one worker"
        )
    return settings
