"""The reference app's JSON API against a real ``clarion serve``, on SQLite and PostgreSQL: sign-in,
CSRF, roles, tenants, the category rules with their 422 field errors (and nothing broadcast), and
what each change broadcasts to real pusher-js clients."""

from __future__ import annotations

from typing import Any

import pytest

from compat.nodeclient import NodeClient, unique

from .conftest import RunningApp

pytestmark = pytest.mark.compat

ALICE, BOB, CAROL = "alice@acme.test", "bob@acme.test", "carol@globex.test"


async def me(app: RunningApp, email: str) -> dict[str, Any]:
    answer = await app.call(email, "GET", "/api/me")
    assert answer.status_code == 200, answer.text
    user: dict[str, Any] = answer.json()
    return user


async def channel_of(app: RunningApp, email: str) -> str:
    return f"private-tenant.{(await me(app, email))['tenant_id']}.categories"


async def test_sign_in_sets_an_http_only_session_cookie_and_a_csrf_cookie_and_me_names_the_tenant(app: RunningApp):
    answer = await app.call(None, "POST", "/api/login", json={"email": "Alice@Acme.test", "password": "demo-password"})
    assert answer.status_code == 200, answer.text
    cookies = answer.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("session="))
    csrf = next(c for c in cookies if c.startswith("csrf_token="))
    assert "HttpOnly" in session and "SameSite=lax" in session
    assert "HttpOnly" not in csrf
    assert answer.json()["csrf_token"] == answer.cookies["csrf_token"]
    alice = await me(app, ALICE)
    assert alice["email"] == ALICE and alice["role"] == "admin" and alice["tenant"]["slug"] == "acme"
    assert alice["tenant_id"] == alice["tenant"]["id"]
    assert (await me(app, BOB))["role"] == "member"
    assert (await app.call(None, "GET", "/api/me")).status_code == 401


async def test_a_wrong_password_is_refused_and_repeated_failures_are_limited(app: RunningApp):
    email = f"{unique('nobody')}@acme.test"
    for _ in range(10):
        answer = await app.call(None, "POST", "/api/login", json={"email": email, "password": "wrong"})
        assert answer.status_code == 401 and answer.json() == {"message": "Wrong email or password."}
    answer = await app.call(None, "POST", "/api/login", json={"email": email, "password": "wrong"})
    assert answer.status_code == 429
    wrong = await app.call(None, "POST", "/api/login", json={"email": BOB, "password": "not-bobs"})
    assert wrong.status_code == 401
    form = await app.call(None, "POST", "/api/login", data={"email": BOB, "password": "demo-password"})
    assert form.status_code == 422, "sign-in takes JSON only"


async def test_a_state_change_without_the_csrf_header_is_refused_and_changes_nothing(app: RunningApp):
    name = unique("NoCsrf")
    bare = await app.call(ALICE, "POST", "/api/categories", json={"name": name}, csrf=False)
    assert bare.status_code == 403 and "CSRF" in bare.json()["message"]
    forged = await app.call(
        ALICE, "POST", "/api/categories", json={"name": name}, headers={"X-CSRF-Token": "x" * 43}, csrf=False
    )
    assert forged.status_code == 403
    assert name not in await app.ids(ALICE)


async def test_members_read_and_only_admins_change(app: RunningApp):
    assert "Shoes" in await app.ids(BOB)
    refused = await app.call(BOB, "POST", "/api/categories", json={"name": unique("ByBob")})
    assert refused.status_code == 403 and refused.json()["message"] == "Only admins may change categories."
    shoes = (await app.ids(BOB))["Shoes"]
    assert (await app.call(BOB, "PATCH", f"/api/categories/{shoes}", json={"name": "Boots"})).status_code == 403
    assert (await app.call(BOB, "DELETE", f"/api/categories/{shoes}")).status_code == 403
    assert (await app.call(None, "GET", "/api/categories")).status_code == 401


async def test_a_tenant_sees_and_touches_only_its_own_categories(app: RunningApp):
    acme, globex = await app.ids(ALICE), await app.ids(CAROL)
    assert "Shoes" in acme and "Shoes" not in globex and "Hardware" in globex and "Hardware" not in acme
    shoes = acme["Shoes"]
    assert (await app.call(CAROL, "PATCH", f"/api/categories/{shoes}", json={"name": "Mine"})).status_code == 404
    assert (await app.call(CAROL, "DELETE", f"/api/categories/{shoes}")).status_code == 404
    under = await app.call(CAROL, "POST", "/api/categories", json={"name": unique("X"), "parent_id": shoes})
    assert under.status_code == 422 and under.json()["errors"] == {"parent_id": ["The parent category does not exist."]}
    assert (await app.ids(ALICE))["Shoes"] == shoes


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"name": ""}, {"name": ["The name is required."]}),
        ({"name": "   "}, {"name": ["The name is required."]}),
        ({"name": "x" * 81}, {"name": ["The name may have at most 80 characters."]}),
        ({"name": "bad\u0000name"}, {"name": ["The name may not contain control characters."]}),
        ({"name": "apparel"}, {"name": ["A category named apparel already exists at the top level."]}),
        ({"name": "Ok", "parent_id": 999999}, {"parent_id": ["The parent category does not exist."]}),
        ({"name": 5}, {"name": ["Input should be a valid string"]}),
        ({"name": "Ok", "colour": "red"}, {"colour": ["Extra inputs are not permitted"]}),
    ],
)
async def test_an_invalid_new_category_gets_422_with_field_errors_and_nothing_is_broadcast(
    app: RunningApp,
    clients,
    body: dict[str, Any],
    errors: dict[str, list[str]],
):
    bob: NodeClient = await clients(BOB)
    channel = await channel_of(app, BOB)
    await bob.subscribe(channel)
    answer = await app.call(ALICE, "POST", "/api/categories", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] == errors and answer.json()["message"]
    # The next valid change arrives, and nothing came before it.
    marker = unique("Marker")
    assert (await app.call(ALICE, "POST", "/api/categories", json={"name": marker})).status_code == 201
    await bob.expect(type="event", channel=channel, event="category.created", timeout=15)
    assert [e["data"]["name"] for e in bob.events(channel)] == [marker]


async def test_a_move_that_would_make_a_cycle_and_a_duplicate_sibling_are_refused(app: RunningApp, clients):
    top, child, grandchild = unique("Top"), unique("Child"), unique("Grand")
    top_id = (await app.call(ALICE, "POST", "/api/categories", json={"name": top})).json()["id"]
    child_id = (await app.call(ALICE, "POST", "/api/categories", json={"name": child, "parent_id": top_id})).json()[
        "id"
    ]
    grand = await app.call(ALICE, "POST", "/api/categories", json={"name": grandchild, "parent_id": child_id})
    grand_id = grand.json()["id"]
    bob: NodeClient = await clients(BOB)
    channel = await channel_of(app, BOB)
    await bob.subscribe(channel)
    cycle = await app.call(ALICE, "PATCH", f"/api/categories/{top_id}", json={"parent_id": grand_id})
    assert cycle.status_code == 422
    assert cycle.json()["errors"] == {"parent_id": [f"{grandchild} is inside {top}: that would make a cycle."]}
    itself = await app.call(ALICE, "PATCH", f"/api/categories/{top_id}", json={"parent_id": top_id})
    assert itself.json()["errors"] == {"parent_id": ["A category cannot be its own parent."]}
    clash = await app.call(
        ALICE, "PATCH", f"/api/categories/{grand_id}", json={"name": child.upper(), "parent_id": top_id}
    )
    assert clash.status_code == 422
    assert clash.json()["errors"] == {"name": [f"A category named {child.upper()} already exists under this parent."]}
    both = await app.call(ALICE, "PATCH", f"/api/categories/{top_id}", json={"name": "", "parent_id": grand_id})
    assert set(both.json()["errors"]) == {"name", "parent_id"}
    ok = await app.call(ALICE, "PATCH", f"/api/categories/{grand_id}", json={"parent_id": top_id})
    assert ok.status_code == 200, ok.text
    moved = await bob.expect(type="event", channel=channel, event="category.updated", timeout=15)
    assert moved["data"]["id"] == grand_id and moved["data"]["parent_id"] == top_id
    assert len(bob.events(channel)) == 1, "only the accepted change was broadcast"


async def test_create_rename_move_and_delete_are_broadcast_to_the_tenant_and_skip_the_senders_socket(
    app: RunningApp, clients
):
    alice: NodeClient = await clients(ALICE, "alice")
    bob: NodeClient = await clients(BOB, "bob")
    carol: NodeClient = await clients(CAROL, "carol")
    channel = await channel_of(app, ALICE)
    for client in (alice, bob):
        await client.subscribe(channel)
    await carol.subscribe(await channel_of(app, CAROL))
    name = unique("Hats")
    created = await app.call(ALICE, "POST", "/api/categories", json={"name": name}, socket_id=alice.socket_id)
    assert created.status_code == 201, created.text
    category = created.json()
    got = await bob.expect(type="event", channel=channel, event="category.created", timeout=15)
    assert got["data"] == {k: category[k] for k in ("tenant_id", "id", "name", "parent_id", "version", "updated_at")}

    renamed = await app.call(
        ALICE, "PATCH", f"/api/categories/{category['id']}", json={"name": name + "!"}, socket_id=alice.socket_id
    )
    assert renamed.status_code == 200 and renamed.json()["version"] == 2
    got = await bob.expect(type="event", channel=channel, event="category.updated", timeout=15)
    assert got["data"]["name"] == name + "!" and got["data"]["version"] == 2

    apparel = (await app.ids(ALICE))["Apparel"]
    moved = await app.call(
        ALICE, "PATCH", f"/api/categories/{category['id']}", json={"parent_id": apparel}, socket_id=alice.socket_id
    )
    assert moved.status_code == 200
    got = await bob.expect(type="event", channel=channel, event="category.updated", timeout=15)
    assert got["data"]["parent_id"] == apparel and got["data"]["version"] == 3

    child = await app.call(ALICE, "POST", "/api/categories", json={"name": "Inner", "parent_id": category["id"]})
    await bob.expect(type="event", channel=channel, event="category.created", timeout=15)
    deleted = await app.call(ALICE, "DELETE", f"/api/categories/{category['id']}", socket_id=alice.socket_id)
    assert deleted.status_code == 200 and sorted(deleted.json()["deleted"]) == sorted(
        [category["id"], child.json()["id"]]
    )
    got = await bob.expect(type="event", channel=channel, event="category.deleted", timeout=15)
    assert got["data"]["id"] == category["id"] and sorted(got["data"]["ids"]) == sorted(deleted.json()["deleted"])

    # Alice's own socket got only the change she made without X-Socket-ID (the child's creation).
    await alice.expect(type="event", channel=channel, event="category.created", timeout=15)
    assert [e["data"]["name"] for e in alice.events(channel)] == ["Inner"]
    assert carol.events() == []
    assert name not in await app.ids(ALICE)


async def test_a_move_notifies_the_tenants_other_users_and_the_admins_activity_feed(app: RunningApp, clients):
    alice: NodeClient = await clients(ALICE, "alice")
    bob: NodeClient = await clients(BOB, "bob")
    tenant = (await me(app, BOB))["tenant_id"]
    bob_id = (await me(app, BOB))["id"]
    await bob.subscribe(f"private-user.{bob_id}")
    await alice.subscribe(f"private-tenant.{tenant}.activity")
    name = unique("Socks")
    made = (await app.call(ALICE, "POST", "/api/categories", json={"name": name})).json()
    apparel = (await app.ids(ALICE))["Apparel"]
    await app.call(ALICE, "PATCH", f"/api/categories/{made['id']}", json={"parent_id": apparel})
    notice = await bob.expect(type="event", channel=f"private-user.{bob_id}", event="notification", timeout=15)
    assert notice["data"]["title"] == f"Alice moved {name} under Apparel"
    assert notice["data"]["kind"] == "category.moved"
    feed = [await alice.expect(type="event", event="activity", timeout=15) for _ in range(2)]
    assert [f["data"]["text"] for f in feed] == [f"Alice added {name}", f"Alice moved {name} under Apparel"]
    # A member may not read the admins' feed, and nobody another user's notifications.
    await bob.command("subscribe", channel=f"private-tenant.{tenant}.activity")
    refused = await bob.expect(lambda o: o["type"] == "subscription_error", timeout=15)
    assert refused["channel"] == f"private-tenant.{tenant}.activity"
    await alice.command("subscribe", channel=f"private-user.{bob_id}")
    await alice.expect(lambda o: o["type"] == "subscription_error", channel=f"private-user.{bob_id}", timeout=15)


async def test_another_tenants_user_is_refused_the_channels_and_a_crafted_name_matches_nothing(
    app: RunningApp, clients
):
    carol: NodeClient = await clients(CAROL, "carol")
    acme = (await me(app, ALICE))["tenant_id"]
    for channel in (
        f"private-tenant.{acme}.categories",
        f"presence-tenant.{acme}.categories",
        f"private-tenant.{acme}.uploads",
        f"private-tenant.{acme}.categories.x",
    ):
        await carol.command("subscribe", channel=channel)
        outcome = await carol.expect(
            lambda o: o["type"] in ("subscription_succeeded", "subscription_error"), channel=channel, timeout=15
        )
        assert outcome["type"] == "subscription_error", channel
    answer = await app.call(
        CAROL,
        "POST",
        "/broadcasting/auth",
        data={"socket_id": "1.2", "channel_name": f"private-tenant.{acme}.categories"},
    )
    assert answer.status_code == 403 and answer.json() == {"error": "the channel's guard refused this user"}


async def test_presence_shows_who_is_viewing_with_name_and_role(app: RunningApp, clients):
    alice: NodeClient = await clients(ALICE, "alice")
    bob: NodeClient = await clients(BOB, "bob")
    channel = f"presence-tenant.{(await me(app, ALICE))['tenant_id']}.categories"
    await alice.subscribe(channel)
    joined = await bob.subscribe(channel)
    assert joined is not None
    members = {m["info"]["name"]: m["info"]["role"] for m in joined["members"]["list"]}
    assert members == {"Alice": "admin", "Bob": "member"}


async def test_a_request_body_over_64_kib_is_refused_with_413(app: RunningApp):
    answer = await app.call(
        ALICE,
        "POST",
        "/api/categories",
        content=b"{" + b" " * 70_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 413 and "at most" in answer.json()["message"]


async def test_a_new_category_never_takes_the_id_of_a_deleted_one(app: RunningApp):
    made = (await app.call(ALICE, "POST", "/api/categories", json={"name": unique("Last")})).json()
    assert (await app.call(ALICE, "DELETE", f"/api/categories/{made['id']}")).status_code == 200
    again = (await app.call(ALICE, "POST", "/api/categories", json={"name": unique("Next")})).json()
    assert again["id"] > made["id"]
