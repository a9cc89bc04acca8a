"""The SDK end to end, through each real test app (FastAPI + SQLAlchemy, Django): real pusher-js
clients authorize through the app's /broadcasting endpoints and receive what the app's code
broadcasts through a real ``clarion serve``."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
import pytest

from clarion.broadcasting import CategoryUpdated, MediaUploadCompleted, MediaUploadProgress
from compat.nodeclient import NodeClient, unique

from .conftest import AppUnderTest

pytestmark = pytest.mark.compat

CATEGORIES = "private-tenant.1.categories"


async def _create_category(app: AppUnderTest, name: str) -> int:
    answer = await app.call("alice", "POST", "/categories", json={"name": name})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["id"])


async def test_a_listener_broadcasts_category_updated_on_the_tenants_private_channel(app: AppUnderTest, pusher_js):
    alice: NodeClient = await pusher_js("alice")
    await alice.subscribe(CATEGORIES)
    category_id = await _create_category(app, "Shoes")
    created = await alice.expect(type="event", channel=CATEGORIES, event="CategoryCreated", timeout=10)
    assert created["data"] == {"id": category_id, "name": "Shoes", "tenant_id": 1}

    answer = await app.call("alice", "PUT", f"/categories/{category_id}", json={"name": "Boots"})
    assert answer.status_code == 200, answer.text
    updated = await alice.expect(type="event", channel=CATEGORIES, event="CategoryUpdated", timeout=10)
    assert updated["data"] == {"tenant_id": 1, "id": category_id, "name": "Boots", "parent_id": None}


async def test_a_presence_channel_shows_the_member_info_the_route_returned(app: AppUnderTest, pusher_js):
    alice: NodeClient = await pusher_js("alice")
    bob: NodeClient = await pusher_js("bob")
    lobby = "presence-tenant.1.lobby"
    await alice.subscribe(lobby)
    joined = await bob.subscribe(lobby)
    assert joined is not None
    members = {str(m["id"]): m["info"] for m in joined["members"]["list"]}
    assert members == {"1": {"name": "Alice", "tenant": 1}, "2": {"name": "Bob", "tenant": 1}}
    added = await alice.expect(type="member_added", channel=lobby, timeout=10)
    assert added["member"] == {"id": "2", "info": {"name": "Bob", "tenant": 1}}


async def test_a_user_of_tenant_b_is_refused_tenant_a_channels(app: AppUnderTest, pusher_js):
    carol: NodeClient = await pusher_js("carol")
    for channel in (CATEGORIES, "presence-tenant.1.lobby", "private-encrypted-tenant.1.vault"):
        await carol.command("subscribe", channel=channel)
        refused = await carol.expect(
            lambda o: o["type"] in ("subscription_succeeded", "subscription_error"), channel=channel, timeout=10
        )
        assert refused["type"] == "subscription_error", refused
    # Her own tenant's channel is hers.
    await carol.subscribe("private-tenant.2.categories")


@pytest.mark.parametrize(
    "channel",
    [
        "private-tenant.1.categories.x",
        "private-tenant.1*",
        "private-tenant.1%2Ecategories",
        "private-tenant.%31.categories",
        "private-tenant.01.categories",
        "private-tenant.1.categories\x00",
        "private-tenant..categories",
        "private-tenant.1.2.categories",
        "presence-tenant.1.lobby.x",
    ],
)
async def test_a_crafted_channel_name_matches_no_route(app: AppUnderTest, channel: str):
    # alice belongs to tenant 1: only the route table's strictness keeps her out of these.
    answer = await app.call(
        "alice", "POST", "/broadcasting/auth", data={"socket_id": "123.456", "channel_name": channel}
    )
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]
    allowed = await app.call(
        "alice", "POST", "/broadcasting/auth", data={"socket_id": "123.456", "channel_name": CATEGORIES}
    )
    assert allowed.status_code == 200 and allowed.json()["auth"].startswith("test-key:")


async def test_a_crafted_channel_name_is_refused_to_pusher_js(app: AppUnderTest, pusher_js):
    alice: NodeClient = await pusher_js("alice")
    await alice.command("subscribe", channel="private-tenant.1.categories.x")
    refused = await alice.expect(
        lambda o: o["type"] in ("subscription_succeeded", "subscription_error"),
        channel="private-tenant.1.categories.x",
        timeout=10,
    )
    assert refused["type"] == "subscription_error"


async def test_a_guest_is_refused_with_a_reason(app: AppUnderTest):
    answer = await app.call(None, "POST", "/broadcasting/auth", data={"socket_id": "1.2", "channel_name": CATEGORIES})
    # Django's CSRF check or the SDK's own refusal: either way a 403 and nothing signed.
    assert answer.status_code == 403
    assert '"auth":' not in answer.text


async def test_to_others_skips_the_senders_socket_and_no_other(app: AppUnderTest, pusher_js):
    alice: NodeClient = await pusher_js("alice")
    bob: NodeClient = await pusher_js("bob")
    for client in (alice, bob):
        await client.subscribe(CATEGORIES)
    category_id = await _create_category(app, "Hats")
    for client in (alice, bob):
        await client.expect(type="event", channel=CATEGORIES, event="CategoryCreated", timeout=10)

    answer = await app.call(
        "alice", "PUT", f"/categories/{category_id}", json={"name": "from alice"}, socket_id=alice.socket_id
    )
    assert answer.status_code == 200, answer.text
    got = await bob.expect(type="event", channel=CATEGORIES, event="CategoryUpdated", timeout=10)
    assert got["data"]["name"] == "from alice"
    # A later event reaches alice; the channel is ordered, so the first would have come before it.
    answer = await app.call("bob", "PUT", f"/categories/{category_id}", json={"name": "from bob"})
    assert answer.status_code == 200, answer.text
    later = await alice.expect(type="event", channel=CATEGORIES, event="CategoryUpdated", timeout=10)
    assert later["data"]["name"] == "from bob"
    assert [e["data"]["name"] for e in alice.events(CATEGORIES, "CategoryUpdated")] == ["from bob"]


async def test_an_event_on_an_encrypted_channel_decrypts_in_pusher_js(app: AppUnderTest, pusher_js):
    alice: NodeClient = await pusher_js("alice")
    vault = "private-encrypted-tenant.1.vault"
    await alice.subscribe(vault)
    answer = await app.call("alice", "POST", "/vault", json={"name": "the combination is 12-34-56"})
    assert answer.status_code == 200, answer.text
    got = await alice.expect(type="event", channel=vault, event="SecretNote", timeout=10)
    assert got["data"] == {"text": "the combination is 12-34-56"}


async def test_a_broadcast_in_a_rolled_back_transaction_never_arrives_and_a_committed_one_does(
    app: AppUnderTest, pusher_js
):
    alice: NodeClient = await pusher_js("alice")
    await alice.subscribe(CATEGORIES)
    category_id = await _create_category(app, "Bags")
    await alice.expect(type="event", channel=CATEGORIES, event="CategoryCreated", timeout=10)

    failed = await app.call("alice", "PUT", f"/categories/{category_id}/then-fail", json={"name": "never saved"})
    assert failed.status_code == 409, failed.text
    committed = await app.call("alice", "PUT", f"/categories/{category_id}", json={"name": "saved"})
    assert committed.status_code == 200, committed.text
    got = await alice.expect(type="event", channel=CATEGORIES, event="CategoryUpdated", timeout=10)
    assert got["data"]["name"] == "saved"
    assert [e["data"]["name"] for e in alice.events(CATEGORIES)] == ["Bags", "saved"]


async def test_user_auth_signs_pusher_js_in_and_terminate_connections_logs_the_user_out(app: AppUnderTest, pusher_js):
    alice: NodeClient = await pusher_js("alice")
    success = await alice.signin()
    assert success["user_data"]["id"] == "1"
    assert success["user_data"]["user_info"] == {"name": "Alice"}
    await app.broadcaster.aterminate_connections(1)
    await alice.expect(type="state", previous="connected", timeout=10)


async def test_a_history_token_is_issued_for_a_channel_the_user_may_join_and_refused_otherwise(app: AppUnderTest):
    answer = await app.call("alice", "POST", "/broadcasting/auth", data={"channel_name": CATEGORIES, "history": "1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expires, signature = body["history_token"].split(":")
    assert int(expires) == body["expires"] and 0 < body["expires"] - time.time() <= 300
    message = f"test-key:history:{CATEGORIES}:{expires}".encode()
    assert hmac.compare_digest(signature, hmac.new(b"test-secret", message, hashlib.sha256).hexdigest())
    refused = await app.call("carol", "POST", "/broadcasting/auth", data={"channel_name": CATEGORIES, "history": "1"})
    assert refused.status_code == 403 and "history_token" not in refused.text


async def test_a_late_subscriber_to_a_media_upload_gets_its_current_progress_from_the_cache_channel(
    app: AppUnderTest, pusher_js
):
    upload = unique("up")
    channel = f"private-cache-tenant.1.uploads.{upload}"
    for received in (100, 400, 700):
        await app.broadcaster.abroadcast(
            MediaUploadProgress(
                tenant_id=1, upload_id=upload, filename="cat.png", bytes_received=received, bytes_total=1000
            )
        )
    bob: NodeClient = await pusher_js("bob")
    await bob.subscribe(channel)
    cached = await bob.expect(type="event", channel=channel, event="MediaUploadProgress", timeout=10)
    assert cached["data"]["bytes_received"] == 700 and cached["data"]["percent"] == 70.0
    await app.broadcaster.abroadcast(
        MediaUploadCompleted(tenant_id=1, upload_id=upload, filename="cat.png", url="/media/cat.png", size=1000)
    )
    done = await bob.expect(type="event", channel=channel, event="MediaUploadCompleted", timeout=10)
    assert done["data"]["url"] == "/media/cat.png"
    assert [e["data"]["bytes_received"] for e in bob.events(channel, "MediaUploadProgress")] == [700]
    carol: NodeClient = await pusher_js("carol")
    await carol.command("subscribe", channel=channel)
    refused = await carol.expect(
        lambda o: o["type"] in ("subscription_succeeded", "subscription_error"), channel=channel, timeout=10
    )
    assert refused["type"] == "subscription_error"


async def test_the_history_route_reads_clarions_history_for_a_member_and_refuses_other_tenants(app: AppUnderTest):
    channel = CATEGORIES
    await app.broadcaster.abroadcast(CategoryUpdated(tenant_id=1, id=unique("c"), name="before"))  # an epoch
    first = await history_of(app, "alice", {"channel_name": channel})
    assert first.status_code == 200, first.text
    start = first.json()
    ids = [unique("c") for _ in range(3)]
    for category_id in ids:
        await app.broadcaster.abroadcast(CategoryUpdated(tenant_id=1, id=category_id, name=f"n-{category_id}"))
    answer = await history_of(
        app, "bob", {"channel_name": channel, "epoch": start["epoch"], "since": str(start["serial"])}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["recovered"] is True and body["epoch"] == start["epoch"]
    assert [json.loads(frame["data"])["id"] for frame in body["events"]] == ids
    assert all(frame["channel"] == channel and frame["event"] == "CategoryUpdated" for frame in body["events"])
    refused = await history_of(app, "carol", {"channel_name": channel})
    assert refused.status_code == 403 and refused.json()["error"] == "the channel's guard refused this user"
    guest = await history_of(app, None, {"channel_name": channel})
    assert guest.status_code == 403
    crafted = await history_of(app, "alice", {"channel_name": "private-tenant.1*"})
    assert crafted.status_code == 403


async def history_of(app: AppUnderTest, name: str | None, query: dict[str, str]) -> httpx.Response:
    return await app.call(name, "GET", "/broadcasting/history", params=query)
