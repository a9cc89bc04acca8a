"""Settings: TOML file (``--config`` / ``CLARION_CONFIG``), then environment variables over it.

Everything from outside is validated by pydantic; a bad value stops the start with a message that
names the setting.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..protocol.app import DEFAULT_HISTORY, App, ClientEvents, HistoryRule
from ..protocol.webhooks import EVENT_TYPES
from . import fanout

DEV_APP = {"id": "1", "key": "clarion-key", "secret": "clarion-secret"}

_APP_ENV: dict[str, str] = {
    "CLARION_ALLOWED_ORIGINS": "allowed_origins",
    "CLARION_MAX_MESSAGE_SIZE": "max_message_size",
    "CLARION_MAX_CONNECTIONS": "max_connections",
    "CLARION_ACTIVITY_TIMEOUT": "activity_timeout",
    "CLARION_CLIENT_EVENTS": "client_events",
    "CLARION_WEBHOOK_URL": "webhook_url",
    "CLARION_MAX_CHANNELS_PER_CONNECTION": "max_channels_per_connection",
    "CLARION_SIGNIN_TIMEOUT": "signin_timeout",
    "CLARION_SUBSCRIPTION_COUNT": "subscription_count_events",
    "CLARION_CACHE_TTL": "cache_ttl",
    "CLARION_HISTORY": "history",
}
_SERVER_ENV: dict[str, str] = {
    "CLARION_HOST": "host",
    "CLARION_PORT": "port",
    "CLARION_SCALING": "scaling",
    "CLARION_REDIS_URL": "redis_url",
    "CLARION_SCALING_PREFIX": "scaling_prefix",
    "CLARION_WORKERS": "workers",
    "CLARION_TLS_CERT": "tls_cert",
    "CLARION_TLS_KEY": "tls_key",
    "CLARION_LOG_FORMAT": "log_format",
    "CLARION_LOG_LEVEL": "log_level",
    "CLARION_PONG_TIMEOUT": "pong_timeout",
    "CLARION_HANDSHAKE_TIMEOUT": "handshake_timeout",
    "CLARION_BODY_TIMEOUT": "body_timeout",
    "CLARION_MAX_BUFFER": "max_buffer",
    "CLARION_LOOP": "loop",
    "CLARION_FANOUT": "fanout",
    "CLARION_NODE_TTL": "node_ttl",
    "CLARION_WEBHOOK_DELAY": "webhook_delay",
    "CLARION_WEBHOOK_RETRY_FOR": "webhook_retry_for",
    "CLARION_WEBHOOK_TIMEOUT": "webhook_timeout",
    "CLARION_WEBHOOK_QUEUE": "webhook_queue",
}


class ConfigError(Exception):
    """A setting is wrong; the message names it."""


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2048)
    event_types: list[str] = Field(default_factory=lambda: sorted(EVENT_TYPES))

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown webhook event type(s) {unknown}; known: {sorted(EVENT_TYPES)}")
        return value


class HistoryConfig(BaseModel):
    """Channels starting with ``prefix`` keep their last ``size`` server events for ``ttl`` s."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(pattern=r"^[A-Za-z0-9_\-=@,.;#]*$", max_length=200)
    size: int = Field(ge=0, le=100_000)
    ttl: float = Field(default=300.0, gt=0, le=7 * 24 * 3600)


def _history_rules(value: Any) -> Any:
    """``CLARION_HISTORY``: ``off``, or rules ``prefix:size:ttl`` separated by spaces (a comma may
    be part of a channel name, a space never is), e.g. ``private-:100:300 presence-:50:60``."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() in ("off", "none"):
        return []
    rules = []
    for part in value.split():
        prefix, sep, rest = part.partition(":")
        size, sep2, ttl = rest.partition(":")
        if not sep:
            raise ValueError(f"history rule {part!r} must read prefix:size or prefix:size:ttl")
        rules.append({"prefix": prefix, "size": size, **({"ttl": ttl} if sep2 else {})})
    return rules


class AppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    key: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    secret: str = Field(min_length=8, max_length=256)
    enabled: bool = True
    max_connections: int | None = Field(default=None, ge=1)
    max_message_size: int = Field(default=10 * 1024, ge=1, le=1024 * 1024)
    max_channel_name_length: int = Field(default=164, ge=16, le=1024)
    max_event_name_length: int = Field(default=200, ge=16, le=1024)
    max_channels_per_connection: int = Field(default=100, ge=1, le=100_000)
    max_channels_per_event: int = Field(default=100, ge=1, le=10_000)
    max_batch_events: int = Field(default=10, ge=1, le=1000)
    max_presence_members: int = Field(default=100, ge=1, le=100_000)
    max_presence_user_info: int = Field(default=1024, ge=16, le=64 * 1024)
    client_events: Literal["members", "all", "none"] = "members"
    client_event_rate: int = Field(default=10, ge=1, le=10_000)
    activity_timeout: int = Field(default=30, ge=1, le=3600)
    allowed_origins: list[str] = Field(default_factory=lambda: ["*"])
    signin_timeout: float = Field(default=0, ge=0, le=3600)
    cache_ttl: float = Field(default=1800, gt=0, le=24 * 3600)
    subscription_count_events: bool = False
    webhook_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2048)
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    history: list[HistoryConfig] | None = None  # None: the default rules

    _split_history = field_validator("history", mode="before")(_history_rules)

    @field_validator("history")
    @classmethod
    def _distinct_prefixes(cls, value: list[HistoryConfig] | None) -> list[HistoryConfig] | None:
        prefixes = [rule.prefix for rule in value or []]
        repeated = sorted({prefix for prefix in prefixes if prefixes.count(prefix) > 1})
        if repeated:
            raise ValueError(f"history rules repeat the prefix(es) {repeated}: give each prefix one rule")
        return value

    @property
    def webhook_targets(self) -> list[WebhookConfig]:
        """``webhooks`` plus ``webhook_url`` (every event type) when that is set."""
        extra = [WebhookConfig(url=self.webhook_url)] if self.webhook_url else []
        return [*self.webhooks, *extra]

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def to_app(self) -> App:
        return App(
            id=self.id,
            key=self.key,
            secret=self.secret,
            enabled=self.enabled,
            max_connections=self.max_connections,
            max_message_size=self.max_message_size,
            max_channel_name_length=self.max_channel_name_length,
            max_event_name_length=self.max_event_name_length,
            max_channels_per_connection=self.max_channels_per_connection,
            max_channels_per_event=self.max_channels_per_event,
            max_batch_events=self.max_batch_events,
            max_presence_members=self.max_presence_members,
            max_presence_user_info=self.max_presence_user_info,
            client_events=ClientEvents(self.client_events),
            client_event_rate=self.client_event_rate,
            activity_timeout=self.activity_timeout,
            allowed_origins=tuple(self.allowed_origins) or ("*",),
            signin_timeout=self.signin_timeout,
            cache_ttl=self.cache_ttl,
            subscription_count_events=self.subscription_count_events,
            history=DEFAULT_HISTORY
            if self.history is None
            else tuple(HistoryRule(rule.prefix, rule.size, rule.ttl) for rule in self.history),
        )


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=6001, ge=0, le=65535)
    scaling: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    scaling_prefix: str = Field(default="clarion", pattern=r"^[A-Za-z0-9_:.-]{1,64}$")
    workers: int = Field(default=1, ge=1, le=256)
    tls_cert: str | None = None
    tls_key: str | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    pong_timeout: float = Field(default=30.0, gt=0, le=600)
    handshake_timeout: float = Field(default=10.0, gt=0, le=600)
    body_timeout: float = Field(default=10.0, gt=0, le=600)  # an HTTP API body, once its request line passed
    max_buffer: int = Field(default=1024 * 1024, ge=16 * 1024)
    loop: Literal["uvloop", "asyncio"] = "uvloop"
    # The fan-out loop: native (C, built at install) where it was built, else python.
    fanout: Literal["native", "python"] | None = None
    node_ttl: float = Field(default=15.0, ge=1, le=300)
    webhook_delay: float = Field(default=3.0, ge=0, le=60)
    webhook_retry_for: float = Field(default=300.0, ge=0, le=24 * 3600)
    webhook_timeout: float = Field(default=5.0, gt=0, le=120)
    webhook_queue: int = Field(default=10_000, ge=10, le=10_000_000)
    apps: list[AppConfig] = Field(default_factory=list)
    dev_app: bool = False  # set when no app was configured and the development app is in use

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        if self.fanout == "native" and fanout.fanout_native is None:
            raise ValueError("fanout = native, but clarion._fanout was not built (no C compiler at install?)")
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


_ENV_OF = {name: var for var, name in {**_SERVER_ENV, **_APP_ENV}.items()}


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

    for var, name in _SERVER_ENV.items():
        if env.get(var, "") != "":
            raw[name] = env[var]

    apps: list[dict[str, Any]] = [dict(app) for app in raw.get("apps", []) if isinstance(app, dict)]
    if not isinstance(raw.get("apps", []), list):
        raise ConfigError("apps must be an array of tables: [[apps]]")
    env_app = {field: env.get(f"CLARION_APP_{field.upper()}", "") for field in ("id", "key", "secret")}
    if any(env_app.values()):
        missing = [f"CLARION_APP_{f.upper()}" for f, v in env_app.items() if not v]
        if missing:
            raise ConfigError(f"an app from the environment needs {', '.join(missing)} too")
        apps = [app for app in apps if app.get("id") != env_app["id"]] + [env_app]
    dev_app = not apps
    if dev_app:
        apps = [dict(DEV_APP)]
    # App-level environment settings apply to every app: the environment wins over the file.
    for var, name in _APP_ENV.items():
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
