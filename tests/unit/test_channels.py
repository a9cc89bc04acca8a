"""Channel kinds by prefix, and the channel-name rules (alphabet, length)."""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from clarion.protocol.channels import (
    DEFAULT_MAX_CHANNEL_NAME,
    USER_CHANNEL_PREFIX,
    ChannelKind,
    Kind,
    is_valid_name,
    kind_of,
    name_problem,
)

ALLOWED = string.ascii_letters + string.digits + "_-=@,.;"
NAMES = st.text(alphabet=ALLOWED, min_size=1, max_size=DEFAULT_MAX_CHANNEL_NAME)

PREFIXES: list[tuple[str, Kind, bool]] = [
    ("private-encrypted-cache-", Kind.ENCRYPTED, True),
    ("private-encrypted-", Kind.ENCRYPTED, False),
    ("private-cache-", Kind.PRIVATE, True),
    ("private-", Kind.PRIVATE, False),
    ("presence-cache-", Kind.PRESENCE, True),
    ("presence-", Kind.PRESENCE, False),
    ("cache-", Kind.PUBLIC, True),
    ("#server-to-user-", Kind.USER, False),
]


# --- kinds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "kind", "cache"), PREFIXES)
def test_kind_of_recognises_each_prefix(prefix: str, kind: Kind, cache: bool) -> None:
    assert kind_of(prefix + "foo") == ChannelKind(kind, cache)


@pytest.mark.parametrize("name", ["foo", "my-channel", "privatechannel", "presencefoo", "cachefoo", "Private-x", "x"])
def test_names_without_a_known_prefix_are_public_without_cache(name: str) -> None:
    assert kind_of(name) == ChannelKind(Kind.PUBLIC, cache=False)


@pytest.mark.parametrize(
    ("name", "kind", "cache"),
    [
        ("private-cachefoo", Kind.PRIVATE, False),  # "cache" without its dash is part of the name
        ("private-encryptedfoo", Kind.PRIVATE, False),
        ("private-encrypted-cachefoo", Kind.ENCRYPTED, False),
        ("presence-cachefoo", Kind.PRESENCE, False),
        ("public-private-foo", Kind.PUBLIC, False),  # prefixes only count at the start
        ("foo-presence-bar", Kind.PUBLIC, False),
        ("server-to-user-1", Kind.PUBLIC, False),
    ],
)
def test_kind_of_needs_the_whole_prefix_at_the_start(name: str, kind: Kind, cache: bool) -> None:
    assert kind_of(name) == ChannelKind(kind, cache)


@given(prefix_kind=st.sampled_from(PREFIXES), suffix=st.text(alphabet=ALLOWED, max_size=40))
def test_kind_of_is_decided_by_the_longest_matching_prefix(prefix_kind: tuple[str, Kind, bool], suffix: str) -> None:
    prefix, kind, cache = prefix_kind
    # The longest listed prefix the name starts with decides, whatever follows it.
    longest = max((p for p, _, _ in PREFIXES if (prefix + suffix).startswith(p)), key=len)
    expected = next((k, c) for p, k, c in PREFIXES if p == longest)
    assert kind_of(prefix + suffix) == ChannelKind(*expected)
    if longest == prefix:
        assert kind_of(prefix + suffix) == ChannelKind(kind, cache)


@pytest.mark.parametrize(
    ("name", "needs_auth", "is_presence", "client_events"),
    [
        ("foo", False, False, False),
        ("cache-foo", False, False, False),
        ("private-foo", True, False, True),
        ("private-cache-foo", True, False, True),
        ("private-encrypted-foo", True, False, False),
        ("private-encrypted-cache-foo", True, False, False),
        ("presence-foo", True, True, True),
        ("presence-cache-foo", True, True, True),
        ("#server-to-user-1", False, False, False),
    ],
)
def test_kind_properties(name: str, needs_auth: bool, is_presence: bool, client_events: bool) -> None:
    kind = kind_of(name)
    assert kind.needs_auth is needs_auth
    assert kind.is_presence is is_presence
    assert kind.allows_client_events is client_events


# --- names -----------------------------------------------------------------------------------


def test_default_max_channel_name_is_pushers_164() -> None:
    assert DEFAULT_MAX_CHANNEL_NAME == 164


def test_name_of_exactly_164_characters_is_valid() -> None:
    assert name_problem("a" * 164) is None
    assert name_problem("presence-" + "a" * 155) is None


def test_name_of_165_characters_is_invalid() -> None:
    problem = name_problem("a" * 165)
    assert problem is not None
    assert "164" in problem
    assert name_problem("presence-" + "a" * 156) is not None


@pytest.mark.parametrize("limit", [1, 10, 200, 1000])
def test_configured_max_length_is_the_edge(limit: int) -> None:
    assert is_valid_name("a" * limit, limit)
    assert not is_valid_name("a" * (limit + 1), limit)
    problem = name_problem("a" * (limit + 1), limit)
    assert problem is not None
    assert str(limit) in problem


def test_longer_max_length_accepts_names_the_default_refuses() -> None:
    assert not is_valid_name("a" * 200)
    assert is_valid_name("a" * 200, 200)


def test_empty_name_is_invalid() -> None:
    assert name_problem("") == "Channel name is empty"


@pytest.mark.parametrize("char", list(ALLOWED))
def test_every_allowed_character_is_valid_alone_and_in_a_name(char: str) -> None:
    assert is_valid_name(char)
    assert is_valid_name(f"private-a{char}b")


def test_name_with_the_whole_alphabet_is_valid() -> None:
    assert is_valid_name(ALLOWED)


@pytest.mark.parametrize(
    "char",
    [
        " ", "\t", "\n", "\r", "\x00", "#", "/", "\\", ":", "!", "*", "+", "%", "?", "&", "$", "'", '"', "(", ")",
        "[", "]", "{", "}", "<", ">", "|", "^", "~", "`",
        "\u00e9", "\u00df", "\u0131", "\u212a",  # non-ASCII letters (U+212A KELVIN SIGN lower-cases to k)
        "\u0661", "\uff11", "\u00b2",  # non-ASCII digits: Arabic-Indic 1, fullwidth 1, superscript 2
        "\U0001f600", "\u200b", "\u00a0",
    ],
)  # fmt: skip
def test_disallowed_character_makes_the_name_invalid(char: str) -> None:
    assert not is_valid_name(char)
    assert not is_valid_name(f"private-foo{char}bar")
    assert not is_valid_name(f"foo{char}")
    problem = name_problem(f"{char}foo")
    assert problem is not None
    assert "letters, digits" in problem


def test_trailing_newline_is_not_accepted_by_the_pattern() -> None:
    # A "$"-anchored regex would let "foo\n" through.
    assert not is_valid_name("foo\n")


@given(name=NAMES)
def test_any_name_of_the_allowed_alphabet_up_to_164_is_valid(name: str) -> None:
    assert name_problem(name) is None


@given(data=st.data(), limit=st.integers(1, 400))
def test_any_name_of_the_allowed_alphabet_up_to_a_configured_max_is_valid(data: st.DataObject, limit: int) -> None:
    name = data.draw(st.text(alphabet=ALLOWED, min_size=1, max_size=limit))
    assert is_valid_name(name, limit)
    assert not is_valid_name(name + "a" * (limit - len(name) + 1), limit)


@given(
    head=st.text(alphabet=ALLOWED, max_size=80),
    bad=st.characters(blacklist_characters=ALLOWED),
    tail=st.text(alphabet=ALLOWED, max_size=80),
)
def test_any_name_containing_a_character_outside_the_alphabet_is_invalid(head: str, bad: str, tail: str) -> None:
    name = head + bad + tail
    assume(not name.startswith(USER_CHANNEL_PREFIX))
    assert name_problem(name) is not None


@given(name=st.text(min_size=1, max_size=200))
def test_validity_agrees_with_the_documented_rule_for_arbitrary_text(name: str) -> None:
    body = name.removeprefix(USER_CHANNEL_PREFIX)
    expected = 0 < len(name) <= 164 and len(body) > 0 and all(c in ALLOWED for c in body)
    assert is_valid_name(name) is expected


# --- user channels ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["#server-to-user-1", "#server-to-user-abc_DEF-1@x.y", "#server-to-user-" + "a" * 148])
def test_server_to_user_channel_is_valid_in_its_exact_form(name: str) -> None:
    assert is_valid_name(name)
    assert kind_of(name).kind is Kind.USER


@pytest.mark.parametrize(
    "name",
    [
        "#server-to-user-",  # no user id
        "#server-to-user-a#b",
        "#server-to-user-a b",
        "#Server-to-user-1",
        "#server-to-user1",
        "#foo",
        "x#server-to-user-1",
        "#server-to-user-" + "a" * 149,  # 165 characters
    ],
)
def test_other_names_with_a_hash_are_invalid(name: str) -> None:
    assert not is_valid_name(name)
