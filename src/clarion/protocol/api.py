"""HTTP API bodies and queries: validation and answers, as pure functions.

Signature checks live in ``signatures``; this module takes an authenticated request's body or
query and returns what to do, or raises ``ApiError`` with the status Pusher's REST API uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import messages
from .app import App
from .channels import kind_of, name_problem
from .errors import ApiError

SOCKET_ID = re.compile(r"\A[0-9]+\.[0-9]+\Z")
CHANNEL_INFO = frozenset({"subscription_count", "user_count", "cache"})
EVENT_INFO = frozenset({"subscription_count", "user_count"})


@dataclass(frozen=True, slots=True)
class Trigger:
    name: str
    data: str
    channels: tuple[str, ...]
    socket_id: str | None
    info: frozenset[str]


def _json_body(body: bytes) -> Any:
    try:
        return messages.loads(body)
    except ValueError:
        raise ApiError(400, "Body is not valid JSON") from None


def parse_info(raw: str | None, allowed: frozenset[str]) -> frozenset[str]:
    if not raw:
        return frozenset()
    attributes = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = attributes - allowed
    if unknown:
        raise ApiError(400, f"Unknown info attribute(s): {', '.join(sorted(unknown))}")
    return attributes


def check_user_count_applies(channel: str, info: frozenset[str]) -> None:
    if "user_count" in info and not kind_of(channel).is_presence:
        raise ApiError(400, f"user_count is only available for presence channels, not {channel!r}")


def parse_event(item: Any, app: App, *, single_channel_only: bool = False) -> Trigger:
    if not isinstance(item, dict):
        raise ApiError(400, "Each event must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "'name' must be a non-empty string")
    if len(name) > app.max_event_name_length:
        raise ApiError(400, f"'name' is longer than {app.max_event_name_length} characters")
    data = item.get("data")
    if not isinstance(data, str):
        raise ApiError(400, "'data' must be a string (JSON-encode objects before sending)")
    if len(data.encode()) > app.max_message_size:
        raise ApiError(413, f"'data' is larger than the app's limit of {app.max_message_size} bytes")

    if "channels" in item and not single_channel_only:
        channels = item["channels"]
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            raise ApiError(400, "'channels' must be a non-empty list of strings")
        channels = list(dict.fromkeys(channels))
        if len(channels) > app.max_channels_per_event:
            raise ApiError(400, f"An event may go to at most {app.max_channels_per_event} channels")
    elif isinstance(item.get("channel"), str):
        channels = [item["channel"]]
    else:
        raise ApiError(400, "'channel' (a string) or 'channels' (a list) is required")
    for channel in channels:
        problem = name_problem(channel, app.max_channel_name_length)
        if problem is not None:
            raise ApiError(400, f"{problem}: {channel[:200]!r}")

    socket_id = item.get("socket_id")
    if socket_id is not None and (not isinstance(socket_id, str) or not SOCKET_ID.match(socket_id)):
        raise ApiError(400, "'socket_id' must look like '123.456'")

    info_raw = item.get("info")
    if info_raw is not None and not isinstance(info_raw, str):
        raise ApiError(400, "'info' must be a comma-separated string")
    info = parse_info(info_raw, EVENT_INFO)
    for channel in channels:
        check_user_count_applies(channel, info)
    # Order kept, duplicates dropped: one delivery per channel.
    return Trigger(name, data, tuple(dict.fromkeys(channels)), socket_id, info)


def parse_trigger_body(body: bytes, app: App) -> Trigger:
    return parse_event(_json_body(body), app)


def parse_batch_body(body: bytes, app: App) -> list[Trigger]:
    payload = _json_body(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("batch"), list):
        raise ApiError(400, 'Body must be {"batch": [...]}')
    batch = payload["batch"]
    if len(batch) > app.max_batch_events:
        raise ApiError(400, f"A batch may hold at most {app.max_batch_events} events")
    return [parse_event(item, app, single_channel_only=True) for item in batch]


@dataclass(frozen=True, slots=True)
class ChannelsQuery:
    prefix: str
    info: frozenset[str]


def parse_channels_query(params: dict[str, str]) -> ChannelsQuery:
    prefix = params.get("filter_by_prefix", "")
    info = parse_info(params.get("info"), frozenset({"user_count", "subscription_count"}))
    if "user_count" in info and not prefix.startswith("presence-"):
        raise ApiError(400, "info=user_count needs filter_by_prefix=presence-")
    return ChannelsQuery(prefix, info)


def parse_channel_query(channel: str, params: dict[str, str], app: App) -> frozenset[str]:
    problem = name_problem(channel, app.max_channel_name_length)
    if problem is not None:
        raise ApiError(400, problem)
    info = parse_info(params.get("info"), CHANNEL_INFO)
    check_user_count_applies(channel, info)
    return info


def channel_info(
    info: frozenset[str], subscription_count: int, user_count: int | None, *, always_occupied: bool
) -> dict[str, Any]:
    """One channel's answer. ``always_occupied`` adds ``occupied`` (GET /channels/{name})."""
    answer: dict[str, Any] = {}
    if always_occupied:
        answer["occupied"] = subscription_count > 0
    if "subscription_count" in info:
        answer["subscription_count"] = subscription_count
    if "user_count" in info and user_count is not None:
        answer["user_count"] = user_count
    return answer
