"""The channel route table, like Laravel's ``routes/channels.php``.

A route's pattern names a channel without its type prefix (``tenant.{tenant_id}.categories``
serves ``private-tenant.7.categories``, ``presence-tenant.7.categories``,
``private-encrypted-tenant.7.categories`` and their ``cache-`` forms). Its guard is called as
``guard(user, **params)`` and answers ``False`` (refused), ``True`` (allowed) or a dict (allowed;
on a presence channel, the member's ``user_info``). The first route whose pattern matches decides;
no match means refused.

A parameter matches one segment of letters, digits, ``_``, ``-``, ``=``, ``@``, ``,`` or ``;``,
never a dot, so ``tenant.{tenant_id}.categories`` cannot match ``tenant.1.categories.x`` nor
reach into a wider name; ``{tenant_id:int}`` narrows it to digits and passes an ``int``.
Names outside Pusher's alphabet (``*``, ``%``, spaces...) are refused before any route is tried.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..protocol.channels import Kind, kind_of, name_problem

GuardResult = bool | dict[str, Any]
Guard = Callable[..., GuardResult | Awaitable[GuardResult]]

# One segment: Pusher's alphabet without the dot.
_SEGMENT = r"[A-Za-z0-9_\-=@,;]+"
_CONVERTERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "str": (_SEGMENT, str),
    "int": (r"0|[1-9][0-9]{0,17}", int),
    "slug": (r"[a-z0-9]+(?:-[a-z0-9]+)*", str),
    "uuid": (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", str),
}
_PARAM = re.compile(r"\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<conv>[a-z]+))?\}")
_LITERAL = re.compile(r"[A-Za-z0-9_\-=@,.;]*")
_TYPE_PREFIXES = (
    "private-encrypted-cache-",
    "private-encrypted-",
    "private-cache-",
    "private-",
    "presence-cache-",
    "presence-",
    "cache-",
)


def bare_name(channel: str) -> str:
    """The channel's name without its type prefix: what route patterns match."""
    for prefix in _TYPE_PREFIXES:
        if channel.startswith(prefix):
            return channel[len(prefix) :]
    return channel


@dataclass(frozen=True)
class ChannelRoute:
    pattern: str
    guard: Guard
    regex: re.Pattern[str]
    params: tuple[tuple[str, str], ...]  # (name, converter)
    _convert: dict[str, Callable[[str], Any]] = field(repr=False, compare=False)

    @property
    def guard_name(self) -> str:
        module = getattr(self.guard, "__module__", "?")
        return f"{module}.{getattr(self.guard, '__qualname__', repr(self.guard))}"

    def match(self, bare: str) -> dict[str, Any] | None:
        found = self.regex.fullmatch(bare)
        if found is None:
            return None
        return {name: self._convert[name](value) for name, value in found.groupdict().items()}


def compile_route(pattern: str, guard: Guard) -> ChannelRoute:
    parts: list[str] = []
    params: list[tuple[str, str]] = []
    convert: dict[str, Callable[[str], Any]] = {}
    position = 0
    for found in _PARAM.finditer(pattern):
        literal = pattern[position : found.start()]
        _check_literal(pattern, literal)
        parts.append(re.escape(literal))
        name, conv = found["name"], found["conv"] or "str"
        if conv not in _CONVERTERS:
            raise ValueError(f"channel route {pattern!r}: unknown converter {conv!r} (one of {sorted(_CONVERTERS)})")
        if name in convert:
            raise ValueError(f"channel route {pattern!r}: parameter {name!r} appears twice")
        regex, function = _CONVERTERS[conv]
        parts.append(f"(?P<{name}>{regex})")
        params.append((name, conv))
        convert[name] = function
        position = found.end()
    _check_literal(pattern, pattern[position:])
    parts.append(re.escape(pattern[position:]))
    if pattern.startswith(_TYPE_PREFIXES):
        raise ValueError(f"channel route {pattern!r}: give the name without its private-/presence- prefix")
    return ChannelRoute(pattern, guard, re.compile("".join(parts)), tuple(params), convert)


def _check_literal(pattern: str, literal: str) -> None:
    if _LITERAL.fullmatch(literal) is None:
        raise ValueError(f"channel route {pattern!r}: only Pusher's channel alphabet and {{params}} are allowed")


@dataclass(frozen=True)
class RouteMatch:
    route: ChannelRoute
    params: dict[str, Any]


class ChannelRoutes:
    """The route table. Register with ``@routes.channel("tenant.{tenant_id:int}.categories")``."""

    def __init__(self) -> None:
        self._routes: list[ChannelRoute] = []

    def channel(self, pattern: str) -> Callable[[Guard], Guard]:
        def register(guard: Guard) -> Guard:
            self.add(pattern, guard)
            return guard

        return register

    def add(self, pattern: str, guard: Guard) -> ChannelRoute:
        route = compile_route(pattern, guard)
        self._routes.append(route)
        return route

    def __iter__(self) -> Iterator[ChannelRoute]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def match(self, channel: str) -> RouteMatch | None:
        """The first route for this full channel name, or None (also for names Pusher refuses)."""
        if name_problem(channel) is not None or kind_of(channel).kind is Kind.USER:
            return None
        bare = bare_name(channel)
        for route in self._routes:
            params = route.match(bare)
            if params is not None:
                return RouteMatch(route, params)
        return None

    async def check(self, user: Any, channel: str) -> tuple[RouteMatch | None, GuardResult]:
        """(the route that decided, the guard's answer); (None, False) when nothing matches."""
        found = self.match(channel)
        if found is None:
            return None, False
        result = found.route.guard(user, **found.params)
        if inspect.isawaitable(result):
            result = await result
        return found, result

    def check_sync(self, user: Any, channel: str) -> tuple[RouteMatch | None, GuardResult]:
        found = self.match(channel)
        if found is None:
            return None, False
        result = found.route.guard(user, **found.params)
        if inspect.isawaitable(result):
            raise TypeError(f"route {found.route.pattern!r} has an async guard: use the async authorizer")
        return found, result

    def describe(self) -> list[dict[str, str]]:
        """One row per route, for ``clarion broadcasts routes``: pattern, parameters, guard."""
        return [
            {
                "pattern": route.pattern,
                "params": ", ".join(f"{name}:{conv}" for name, conv in route.params) or "-",
                "guard": route.guard_name,
            }
            for route in self._routes
        ]
