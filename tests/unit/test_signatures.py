"""Signatures: Pusher's published vectors, the official Python SDK, and verify_api_request's rules."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pusher
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pusher.http import Request

from clarion.protocol.errors import ApiError
from clarion.protocol.signatures import (
    API_TIMESTAMP_WINDOW,
    api_string_to_sign,
    body_md5,
    channel_auth,
    channel_string_to_sign,
    sign_api_request,
    user_auth,
    verify_api_request,
    verify_channel_auth,
    verify_user_auth,
    webhook_signature,
)

# Pusher's worked-example credentials (auth-signatures.md and rest-api.md).
KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
SOCKET = "1234.1234"

PRIVATE_AUTH = f"{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
# The presence value Pusher publishes (docs and the Java, PHP, Go and Haskell SDK test suites) signs
# user_info {"name":"Mr. Pusher"}. The current docs page prints "Mr. Channels" next to the same
# value, which does not match it; the Mr. Pusher string is the one the value belongs to.
PRESENCE_DATA = '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}'
PRESENCE_AUTH = f"{KEY}:afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c"
USER_DATA = '{"id":"12345"}'
USER_AUTH = f"{KEY}:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"

API_BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
API_BODY_MD5 = "ec365a775a4cd0599faeb73354201b6f"
API_TIMESTAMP = 1353088179
API_STRING_TO_SIGN = (
    "POST\n/apps/3/events\n"
    "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
)
API_SIGNATURE = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"

SOCKET_IDS = st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 10**12), st.integers(0, 10**12))
CHANNEL_SUFFIX = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-=@,.;", min_size=1, max_size=60
)


def reference_hmac(secret: str, message: str) -> str:
    """HMAC-SHA256 computed here, independently of the code under test."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def vector_params(**overrides: str) -> dict[str, str]:
    params = {
        "auth_key": KEY,
        "auth_timestamp": str(API_TIMESTAMP),
        "auth_version": "1.0",
        "body_md5": API_BODY_MD5,
        "auth_signature": API_SIGNATURE,
    }
    params.update(overrides)
    return params


def verify(
    params: dict[str, str],
    *,
    body: bytes = API_BODY,
    now: float = API_TIMESTAMP,
    method: str = "POST",
    paths: tuple[str, ...] = ("/apps/3/events",),
    key: str = KEY,
    secret: str = SECRET,
) -> None:
    verify_api_request(key=key, secret=secret, method=method, paths=paths, params=params, body=body, now=now)


def signed_params(method: str, path: str, params: dict[str, str], secret: str = SECRET) -> dict[str, str]:
    """``params`` plus an auth_signature computed from a hand-built string to sign."""
    query = "&".join(f"{k.lower()}={v}" for k, v in sorted(params.items(), key=lambda kv: kv[0].lower()))
    return {**params, "auth_signature": reference_hmac(secret, f"{method}\n{path}\n{query}")}


# --- channel authorization: published vectors ------------------------------------------------


def test_private_channel_auth_matches_pusher_published_vector() -> None:
    assert channel_auth(KEY, SECRET, SOCKET, "private-foobar") == PRIVATE_AUTH


def test_private_channel_string_to_sign_is_socket_colon_channel() -> None:
    assert channel_string_to_sign(SOCKET, "private-foobar") == "1234.1234:private-foobar"


def test_published_private_vector_is_accepted() -> None:
    assert verify_channel_auth(KEY, SECRET, PRIVATE_AUTH, SOCKET, "private-foobar")


def test_presence_string_to_sign_appends_channel_data() -> None:
    assert (
        channel_string_to_sign(SOCKET, "presence-foobar", PRESENCE_DATA) == f"1234.1234:presence-foobar:{PRESENCE_DATA}"
    )


def test_presence_channel_auth_matches_pusher_published_vector() -> None:
    assert channel_auth(KEY, SECRET, SOCKET, "presence-foobar", PRESENCE_DATA) == PRESENCE_AUTH
    assert verify_channel_auth(KEY, SECRET, PRESENCE_AUTH, SOCKET, "presence-foobar", PRESENCE_DATA)


def test_presence_auth_for_the_mr_channels_docs_string_matches_an_independent_hmac() -> None:
    data = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
    expected = f"{KEY}:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
    assert expected == f"{KEY}:{reference_hmac(SECRET, f'{SOCKET}:presence-foobar:{data}')}"
    assert verify_channel_auth(KEY, SECRET, expected, SOCKET, "presence-foobar", data)


def test_user_signin_auth_matches_pusher_published_vector() -> None:
    assert user_auth(KEY, SECRET, SOCKET, USER_DATA) == USER_AUTH
    assert verify_user_auth(KEY, SECRET, USER_AUTH, SOCKET, USER_DATA)


# --- channel authorization: refusals ---------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "socket_id", "channel", "channel_data"),
    [
        (PRIVATE_AUTH, "1234.1235", "private-foobar", None),  # another socket's token
        (PRIVATE_AUTH, SOCKET, "private-foobaz", None),  # another channel's token
        (PRIVATE_AUTH.replace(KEY, "000000000000000000000"), SOCKET, "private-foobar", None),  # wrong key
        (PRIVATE_AUTH[:-1] + "5", SOCKET, "private-foobar", None),  # one hex digit changed
        (PRIVATE_AUTH.upper(), SOCKET, "private-foobar", None),  # signature case matters
        (PRIVATE_AUTH.split(":")[1], SOCKET, "private-foobar", None),  # signature without key
        ("", SOCKET, "private-foobar", None),
        (PRESENCE_AUTH, SOCKET, "presence-foobar", PRESENCE_DATA.replace("10", "11")),  # tampered channel_data
        (PRESENCE_AUTH, SOCKET, "presence-foobar", None),  # channel_data left out
        (PRIVATE_AUTH, SOCKET, "private-foobar", "{}"),  # channel_data added
    ],
)
def test_channel_auth_that_does_not_match_is_refused(
    auth: str, socket_id: str, channel: str, channel_data: str | None
) -> None:
    assert not verify_channel_auth(KEY, SECRET, auth, socket_id, channel, channel_data)


def test_channel_auth_signed_with_another_secret_is_refused() -> None:
    forged = f"{KEY}:{reference_hmac('not-the-secret', f'{SOCKET}:private-foobar')}"
    assert not verify_channel_auth(KEY, SECRET, forged, SOCKET, "private-foobar")


def test_user_auth_for_other_user_data_is_refused() -> None:
    assert not verify_user_auth(KEY, SECRET, USER_AUTH, SOCKET, '{"id":"12346"}')
    assert not verify_user_auth(KEY, SECRET, USER_AUTH, "1234.1235", USER_DATA)


# --- the official pusher SDK -----------------------------------------------------------------

SDK_MASTER_KEY = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="  # base64 of 32 bytes


def sdk() -> pusher.Pusher:
    return pusher.Pusher(app_id="3", key=KEY, secret=SECRET, encryption_master_key_base64=SDK_MASTER_KEY)


def test_sdk_private_auth_is_the_published_vector() -> None:
    assert sdk().authenticate(channel="private-foobar", socket_id=SOCKET) == {"auth": PRIVATE_AUTH}


@given(socket_id=SOCKET_IDS, suffix=CHANNEL_SUFFIX, prefix=st.sampled_from(["private-", "private-cache-"]))
def test_sdk_private_channel_auth_is_accepted(socket_id: str, suffix: str, prefix: str) -> None:
    channel = prefix + suffix
    response = sdk().authenticate(channel=channel, socket_id=socket_id)
    assert verify_channel_auth(KEY, SECRET, response["auth"], socket_id, channel)
    assert not verify_channel_auth(KEY, SECRET, response["auth"], socket_id + "1", channel)


@given(
    socket_id=SOCKET_IDS,
    suffix=CHANNEL_SUFFIX,
    user_id=st.one_of(st.integers(0, 10**9), st.text(min_size=1, max_size=20)),
    info=st.dictionaries(
        st.text(max_size=8), st.one_of(st.text(max_size=20), st.integers(), st.booleans()), max_size=4
    ),
)
def test_sdk_presence_channel_auth_is_accepted_with_its_channel_data(
    socket_id: str, suffix: str, user_id: int | str, info: dict[str, object]
) -> None:
    channel = "presence-" + suffix
    response = sdk().authenticate(
        channel=channel, socket_id=socket_id, custom_data={"user_id": user_id, "user_info": info}
    )
    channel_data = response["channel_data"]
    assert isinstance(channel_data, str)
    assert verify_channel_auth(KEY, SECRET, response["auth"], socket_id, channel, channel_data)
    assert not verify_channel_auth(KEY, SECRET, response["auth"], socket_id, channel, channel_data + " ")


def test_sdk_encrypted_channel_auth_is_accepted_and_shared_secret_is_not_signed() -> None:
    response = sdk().authenticate(channel="private-encrypted-foobar", socket_id=SOCKET)
    assert "shared_secret" in response
    assert verify_channel_auth(KEY, SECRET, response["auth"], SOCKET, "private-encrypted-foobar")


def test_sdk_user_authentication_is_accepted() -> None:
    response = sdk().authenticate_user(socket_id=SOCKET, user_data={"id": "12345", "user_info": {"name": "Ada"}})
    assert verify_user_auth(KEY, SECRET, response["auth"], SOCKET, response["user_data"])
    assert not verify_user_auth(KEY, SECRET, response["auth"], SOCKET, USER_DATA)


def test_sdk_signing_primitive_agrees_with_ours() -> None:
    from pusher.signature import sign

    assert sign(SECRET, API_STRING_TO_SIGN) == sign_api_request(SECRET, "POST", "/apps/3/events", vector_params())


# --- HTTP API: published vector --------------------------------------------------------------


def test_body_md5_matches_published_vector() -> None:
    assert body_md5(API_BODY) == API_BODY_MD5


def test_api_string_to_sign_matches_published_vector() -> None:
    assert api_string_to_sign("POST", "/apps/3/events", vector_params()) == API_STRING_TO_SIGN


def test_api_signature_matches_published_vector() -> None:
    assert sign_api_request(SECRET, "POST", "/apps/3/events", vector_params()) == API_SIGNATURE


def test_published_api_request_is_accepted() -> None:
    verify(vector_params())


def test_api_string_to_sign_lowercases_sorts_keys_and_does_not_url_escape_values() -> None:
    params = {"Info": "user_count,subscription_count", "auth_key": "k", "FILTER_BY_PREFIX": "presence-a@b"}
    assert api_string_to_sign("get", "/apps/3/channels", params) == (
        "GET\n/apps/3/channels\nauth_key=k&filter_by_prefix=presence-a@b&info=user_count,subscription_count"
    )


def test_api_string_to_sign_leaves_out_auth_signature_in_any_case() -> None:
    with_sig = {"auth_key": "k", "auth_signature": "x", "AUTH_SIGNATURE": "y"}
    assert api_string_to_sign("POST", "/p", with_sig) == "POST\n/p\nauth_key=k"


# --- HTTP API: the official SDK's requests ---------------------------------------------------


def _verify_sdk_request(request: Request) -> None:
    verify_api_request(
        key=KEY,
        secret=SECRET,
        method=request.method,
        paths=(request.path,),
        params=request.query_params,
        body=request.body,
        now=time.time(),
    )


def test_sdk_trigger_request_is_accepted() -> None:
    client = sdk()._pusher_client
    request = client.trigger.make_request(["my-channel", "presence-x"], "my-event", {"message": "héllo"}, "1.2")
    _verify_sdk_request(request)


def test_sdk_batch_request_is_accepted() -> None:
    client = sdk()._pusher_client
    request = client.trigger_batch.make_request([{"channel": "a", "name": "e", "data": "d"}])
    _verify_sdk_request(request)


def test_sdk_channels_info_get_request_is_accepted() -> None:
    client = sdk()._pusher_client
    request = client.channels_info.make_request("presence-", ["user_count"])
    _verify_sdk_request(request)


def test_sdk_channel_info_request_with_special_characters_in_the_path_is_accepted() -> None:
    client = sdk()._pusher_client
    request = client.channel_info.make_request("private-a@b,c;d=e", ["subscription_count"])
    _verify_sdk_request(request)


def test_sdk_request_with_tampered_body_is_refused() -> None:
    client = sdk()._pusher_client
    request = client.trigger.make_request(["my-channel"], "my-event", "data")
    with pytest.raises(ApiError) as refused:
        verify_api_request(
            key=KEY,
            secret=SECRET,
            method="POST",
            paths=(request.path,),
            params=request.query_params,
            body=request.body.replace(b"data", b"DATA"),
            now=time.time(),
        )
    assert refused.value.status == 401


# --- verify_api_request: refusals ------------------------------------------------------------


@pytest.mark.parametrize("missing", ["auth_key", "auth_timestamp", "auth_version", "auth_signature"])
def test_api_request_missing_a_required_parameter_is_refused(missing: str) -> None:
    params = vector_params()
    del params[missing]
    with pytest.raises(ApiError) as refused:
        verify(params)
    assert refused.value.status == 401
    assert missing in refused.value.message


def test_api_request_with_another_apps_key_is_refused() -> None:
    params = vector_params(auth_key="another-key")
    del params["auth_signature"]
    params = signed_params("POST", "/apps/3/events", params)  # signed, with the right secret, for that key
    with pytest.raises(ApiError) as refused:
        verify(params)
    assert refused.value.status == 401
    assert "auth_key" in refused.value.message


@pytest.mark.parametrize("version", ["1.1", "2.0", "1", "", "1.0 "])
def test_api_request_with_auth_version_other_than_1_0_is_refused(version: str) -> None:
    params = vector_params(auth_version=version)
    del params["auth_signature"]
    with pytest.raises(ApiError) as refused:
        verify(signed_params("POST", "/apps/3/events", params))
    assert refused.value.status == 401
    assert "auth_version" in refused.value.message


@pytest.mark.parametrize("timestamp", ["", "abc", "1353088179.5", "0x10"])
def test_api_request_with_non_integer_timestamp_is_refused(timestamp: str) -> None:
    params = vector_params(auth_timestamp=timestamp)
    del params["auth_signature"]
    with pytest.raises(ApiError) as refused:
        verify(signed_params("POST", "/apps/3/events", params))
    assert refused.value.status == 401


@pytest.mark.parametrize("offset", [0, 1, 599, API_TIMESTAMP_WINDOW, -1, -API_TIMESTAMP_WINDOW])
def test_api_request_within_600_seconds_of_server_time_is_accepted(offset: float) -> None:
    verify(vector_params(), now=API_TIMESTAMP + offset)


@pytest.mark.parametrize("offset", [600.001, 601, -601, -600.5, 86400])
def test_api_request_outside_600_seconds_of_server_time_is_refused(offset: float) -> None:
    with pytest.raises(ApiError) as refused:
        verify(vector_params(), now=API_TIMESTAMP + offset)
    assert refused.value.status == 401
    assert "Timestamp" in refused.value.message


def test_api_timestamp_window_is_600_seconds() -> None:
    assert API_TIMESTAMP_WINDOW == 600


def test_api_request_with_wrong_body_md5_is_refused() -> None:
    params = vector_params(body_md5=body_md5(b"something else"))
    del params["auth_signature"]
    with pytest.raises(ApiError) as refused:
        verify(signed_params("POST", "/apps/3/events", params))  # validly signed, but not this body
    assert refused.value.status == 401
    assert "body_md5" in refused.value.message


def test_api_request_with_a_body_but_no_body_md5_is_refused() -> None:
    params = vector_params()
    del params["body_md5"], params["auth_signature"]
    with pytest.raises(ApiError) as refused:
        verify(signed_params("POST", "/apps/3/events", params))
    assert refused.value.status == 401
    assert "body_md5" in refused.value.message


def test_api_request_with_body_changed_after_signing_is_refused() -> None:
    with pytest.raises(ApiError) as refused:
        verify(vector_params(), body=API_BODY.replace(b"foo", b"bar"))
    assert refused.value.status == 401


def test_get_request_without_body_needs_no_body_md5() -> None:
    params = signed_params(
        "GET", "/apps/3/channels", {"auth_key": KEY, "auth_timestamp": str(API_TIMESTAMP), "auth_version": "1.0"}
    )
    verify(params, body=b"", method="GET", paths=("/apps/3/channels",))


@pytest.mark.parametrize(
    "signature",
    [
        API_SIGNATURE[:-1] + "d",
        API_SIGNATURE.upper(),
        "",
        reference_hmac("another-secret", API_STRING_TO_SIGN),
    ],
)
def test_api_request_with_bad_signature_is_refused(signature: str) -> None:
    with pytest.raises(ApiError) as refused:
        verify(vector_params(auth_signature=signature))
    assert refused.value.status == 401
    assert "signature" in refused.value.message


def test_api_signature_for_another_method_is_refused() -> None:
    with pytest.raises(ApiError):
        verify(vector_params(), method="PUT")


def test_api_signature_for_another_path_is_refused() -> None:
    with pytest.raises(ApiError):
        verify(vector_params(), paths=("/apps/4/events",))


def test_api_request_with_an_extra_unsigned_parameter_is_refused() -> None:
    with pytest.raises(ApiError):
        verify({**vector_params(), "info": "user_count"})


def test_api_request_with_no_candidate_paths_is_refused() -> None:
    with pytest.raises(ApiError):
        verify(vector_params(), paths=())


RAW_PATH = "/apps/3/channels/private-a%40b%2Cc"
DECODED_PATH = "/apps/3/channels/private-a@b,c"
PATH_PARAMS = {"auth_key": KEY, "auth_timestamp": str(API_TIMESTAMP), "auth_version": "1.0"}


def test_api_request_signed_over_decoded_path_is_accepted_when_offered_both_paths() -> None:
    params = signed_params("GET", DECODED_PATH, PATH_PARAMS)
    verify(params, body=b"", method="GET", paths=(RAW_PATH, DECODED_PATH))


def test_api_request_signed_over_raw_path_is_accepted_when_offered_both_paths() -> None:
    params = signed_params("GET", RAW_PATH, PATH_PARAMS)
    verify(params, body=b"", method="GET", paths=(RAW_PATH, DECODED_PATH))


def test_api_request_signed_over_decoded_path_is_refused_when_only_raw_path_offered() -> None:
    params = signed_params("GET", DECODED_PATH, PATH_PARAMS)
    with pytest.raises(ApiError):
        verify(params, body=b"", method="GET", paths=(RAW_PATH,))


def test_api_request_with_uppercase_parameter_keys_is_accepted() -> None:
    upper = {
        "AUTH_KEY": KEY,
        "Auth_Timestamp": str(API_TIMESTAMP),
        "auth_VERSION": "1.0",
        "BODY_MD5": API_BODY_MD5,
        "Auth_Signature": API_SIGNATURE,
    }
    verify(upper)


def test_uppercase_parameter_keys_are_lowercased_before_sorting() -> None:
    # "Zeta" sorts before "auth_*" as is, after it once lower-cased.
    params = signed_params("GET", "/apps/3/channels", {**PATH_PARAMS, "Zeta": "1"})
    expected = reference_hmac(
        SECRET, f"GET\n/apps/3/channels\nauth_key={KEY}&auth_timestamp={API_TIMESTAMP}&auth_version=1.0&zeta=1"
    )
    assert params["auth_signature"] == expected
    verify(params, body=b"", method="GET", paths=("/apps/3/channels",))


def test_api_method_is_compared_uppercased() -> None:
    verify(vector_params(), method="post")


# --- webhooks --------------------------------------------------------------------------------


def test_webhook_signature_is_hmac_of_the_raw_body() -> None:
    body = b'{"time_ms":1,"events":[]}'
    assert webhook_signature(SECRET, body) == reference_hmac(SECRET, body.decode())


def test_webhook_signature_is_accepted_by_the_sdk() -> None:
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": [{"name": "channel_occupied", "channel": "a"}]})
    validated = sdk().validate_webhook(key=KEY, signature=webhook_signature(SECRET, body.encode()), body=body)
    assert validated is not None
    assert validated["events"][0]["channel"] == "a"
