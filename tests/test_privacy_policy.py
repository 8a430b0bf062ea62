"""The payload policy on decoded records, and its config: what changes, and what never does."""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.codec import DecodeLimits, decode_payload
from proxy.codec.policy import IpPolicy, PayloadPolicy, derived_insert_id, truncate_ip
from proxy.config import ConfigError, parse_config
from proxy.decide.routing import RoutedRequest, Router
from tests.conftest import EU_TOKEN, US_TOKEN

EMAIL = r"[\w.+-]+@[\w-]+\.[\w.]+"


def policy(privacy: dict[str, Any] | None = None,
           payload: dict[str, Any] | None = None) -> PayloadPolicy:
    config = parse_config({"privacy": privacy or {}, "payload": payload or {}})
    return PayloadPolicy(config.privacy, config.payload)


def browser_event(**props: Any) -> dict[str, Any]:
    return {"event": "Signed up a@b.co", "properties": {
        "token": "tok", "distinct_id": "ann@example.com", "time": 1764330000.123,
        "$insert_id": "abc123def456ghi7", "$device_id": "dev-1", "$user_id": "ann@example.com",
        **props}}


def test_off_by_default_nothing_is_decoded_or_changed() -> None:
    default = policy()
    assert not any(default.decodes(e) for e in ("track", "engage", "groups", "import", "record"))
    records = [browser_event(email="x@y.io", ip="203.0.113.7")]
    assert not default.scrub("track", records)
    assert records == [browser_event(email="x@y.io", ip="203.0.113.7")]


def test_drop_list_removes_properties_everywhere_they_live() -> None:
    rules = policy({"drop_properties": ["email", "$phone"]})
    events = [browser_event(email="x@y.io", plan="pro"), browser_event(plan="free")]
    assert rules.scrub("track", events)
    assert events[0]["properties"] == {**browser_event(plan="pro")["properties"]}
    assert events[1] == browser_event(plan="free")
    profile = {"$token": "tok", "$distinct_id": "d", "$set": {"email": "x", "n": 1},
               "$set_once": {"$phone": "1"}, "$unset": ["email"]}
    assert rules.scrub("engage", [profile])
    assert profile == {"$token": "tok", "$distinct_id": "d", "$set": {"n": 1}, "$set_once": {},
                       "$unset": ["email"]}
    assert not rules.scrub("groups", [{"$token": "tok", "$group_key": "c", "$set": {"n": 1}}])


def test_allow_list_keeps_identity_and_dedup_keys() -> None:
    rules = policy({"allow_properties": ["plan"]})
    events = [browser_event(plan="pro", email="x@y.io", **{"$current_url": "https://s/"})]
    assert rules.scrub("import", events)
    assert events == [browser_event(plan="pro")]      # token, distinct_id, time, ids stay


def test_redaction_replaces_matches_at_any_depth_but_never_ids_or_names() -> None:
    rules = policy({"redact_patterns": [EMAIL, r"\b\d{3}-\d{4}\b"], "redact_marker": r"<\1>"})
    events = [browser_event(note="mail bo@x.org or 555-1234",
                            nested={"list": ["c@d.ee", 7, {"deep": "e@f.gg"}], "o@p.qq": 1})]
    assert rules.scrub("track", events)
    props = events[0]["properties"]
    assert props["note"] == r"mail <\1> or <\1>"          # the marker is literal text
    assert props["nested"] == {"list": [r"<\1>", 7, {"deep": r"<\1>"}], r"<\1>": 1}
    assert events[0]["event"] == "Signed up a@b.co"
    assert props["distinct_id"] == props["$user_id"] == "ann@example.com"
    profile = {"$token": "tok", "$distinct_id": "ann@example.com",
               "$set": {"$email": "ann@example.com"}, "$union": {"emails": ["b@c.de"]}}
    assert rules.scrub("engage", [profile])
    assert profile["$set"] == {"$email": r"<\1>"} and profile["$union"] == {"emails": [r"<\1>"]}
    assert profile["$distinct_id"] == "ann@example.com"


def test_nothing_to_scrub_reports_no_change() -> None:
    rules = policy({"drop_properties": ["email"], "redact_patterns": [EMAIL], "ip": "truncated"})
    clean = [browser_event(plan="pro", ip="0")]
    before = copy.deepcopy(clean)
    assert not rules.scrub("track", clean)       # so the original bytes go upstream
    assert clean == before


@pytest.mark.parametrize(("mode", "header", "event_ip", "profile_ip"), [
    ("full", "203.0.113.77", "198.51.100.9", "2001:db8:aa:bb::1"),
    ("truncated", "203.0.113.0", "198.51.100.0", "2001:db8:aa::"),
    ("omitted", "", None, None),
])
def test_ip_policy_in_headers_and_payloads(mode: str, header: str, event_ip: str | None,
                                           profile_ip: str | None) -> None:
    rules = policy({"ip": mode})
    assert rules.ip.upstream_ip("203.0.113.77") == header
    events = [browser_event(ip="198.51.100.9")]
    profile = {"$token": "t", "$distinct_id": "d", "$ip": "2001:db8:aa:bb::1", "$set": {}}
    rules.scrub("track", events)
    rules.scrub("engage", [profile])
    assert events[0]["properties"].get("ip") == event_ip
    assert profile.get("$ip") == profile_ip
    assert events[0]["properties"]["time"] == 1764330000.123


def test_ip_zero_only_when_omitted() -> None:
    omitted, truncated = IpPolicy(parse_config({"privacy": {"ip": "omitted"}}).privacy), \
        IpPolicy(parse_config({"privacy": {"ip": "truncated"}}).privacy)
    assert omitted.zero_ip_field(b"verbose=1&ip=1&_=5", add=True) == b"verbose=1&ip=0&_=5"
    assert omitted.zero_ip_field(b"verbose=1", add=True) == b"verbose=1&ip=0"
    assert omitted.zero_ip_field(b"verbose=1", add=False) is None
    assert omitted.zero_ip_field(b"ip=0", add=True) is None
    assert truncated.zero_ip_field(b"ip=1", add=True) is None        # ip=1 kept: city-level geo


def test_truncation_prefixes_and_non_ips() -> None:
    assert truncate_ip("203.0.113.77", 24, 48) == "203.0.113.0"
    assert truncate_ip("203.0.113.77", 16, 48) == "203.0.0.0"
    assert truncate_ip("::ffff:203.0.113.77", 24, 48) == "203.0.113.0"
    assert truncate_ip("2001:db8:1:2:3::9", 24, 56) == "2001:db8:1::"
    assert truncate_ip("not an ip", 24, 48) is None
    assert IpPolicy(parse_config({"privacy": {"ip": "truncated"}}).privacy).upstream_ip("") == ""


def test_insert_ids_added_once_stably_and_only_when_allowed() -> None:
    bare: dict[str, Any] = {"event": "e", "properties": {"token": "t", "distinct_id": "d",
                                                          "time": 1}}
    when_rewriting = policy()
    records = [copy.deepcopy(bare)]
    assert not when_rewriting.add_insert_ids("track", records, rewriting=False)
    assert records == [bare]
    assert when_rewriting.add_insert_ids("track", records, rewriting=True)
    insert_id = records[0]["properties"]["$insert_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", insert_id) and insert_id == derived_insert_id(bare)
    assert not when_rewriting.add_insert_ids("track", records, rewriting=True)   # once
    again = [copy.deepcopy(bare)]
    when_rewriting.add_insert_ids("import", again, rewriting=True)
    assert again[0]["properties"]["$insert_id"] == insert_id     # an SDK resend dedups
    other: list[dict[str, Any]] = [{"event": "e", "properties": {**bare["properties"], "time": 2}}]
    when_rewriting.add_insert_ids("track", other, rewriting=True)
    assert other[0]["properties"]["$insert_id"] != insert_id
    kept = [browser_event()]
    assert not when_rewriting.add_insert_ids("track", kept, rewriting=True)
    assert kept == [browser_event()]
    assert not when_rewriting.add_insert_ids("engage", [{"$set": {}}], rewriting=True)
    always, never = policy(payload={"insert_id": "always"}), policy(payload={"insert_id": "never"})
    assert always.decodes("track") and always.decodes("import") and not always.decodes("engage")
    assert always.add_insert_ids("track", [copy.deepcopy(bare)], rewriting=False)
    assert not never.add_insert_ids("track", [copy.deepcopy(bare)], rewriting=True)


def test_config_problems_name_the_key() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"privacy": {"drop_properties": ["time", "email", ""],
                                  "redact_patterns": ["(", ".*"], "ip": "hashed",
                                  "ipv4_prefix": 33, "colour": 1},
                      "payload": {"insert_id": "sometimes", "upstream_gzip_level": 10,
                                  "max_depth": 2}})
    problems = "\n".join(error.value.problems)
    for expected in ("privacy.drop_properties: 'time' is never altered",
                     "privacy.drop_properties: a property name cannot be empty",
                     "privacy.redact_patterns[0]: '(' is not a valid regular expression",
                     "privacy.redact_patterns[1]: '.*' can match the empty string",
                     "privacy.ip: must be one of full, truncated, omitted, got 'hashed'",
                     "privacy.ipv4_prefix: must be at most 32", "privacy.colour: unknown key",
                     "payload.insert_id: must be one of when_rewriting, always, never",
                     "payload.upstream_gzip_level: must be at most 9",
                     "payload.max_depth: must be at least 4"):
        assert expected in problems


email_or_word = st.from_regex(r"[a-z]{1,6}(@[a-z]{1,5}\.io)?", fullmatch=True)
property_values = st.recursive(st.none() | st.integers() | email_or_word,
                               lambda inner: st.lists(inner, max_size=3)
                               | st.dictionaries(email_or_word, inner, max_size=3), max_leaves=8)
any_events = st.lists(st.builds(
    lambda name, distinct_id, time, insert_id, token, extra: {"event": name, "properties": {
        "distinct_id": distinct_id, "time": time, "token": token, **extra,
        **({"$insert_id": insert_id} if insert_id else {})}},
    email_or_word, email_or_word, st.floats(0, 2e9), st.one_of(st.none(), email_or_word),
    st.sampled_from([US_TOKEN, EU_TOKEN, "other"]),
    st.dictionaries(st.sampled_from(["email", "plan", "ip", "note", "$user_id"]), property_values,
                    max_size=4)), min_size=1, max_size=8)


@pytest.mark.slow   # 120 routed examples: seconds
@settings(max_examples=120, deadline=None)
@given(events=any_events, projects=st.booleans(), allow=st.booleans())
def test_the_router_never_alters_what_mixpanel_dedups_or_routes_on(
        events: list[dict[str, Any]], projects: bool, allow: bool) -> None:
    privacy: dict[str, Any] = {"drop_properties": ["email"], "redact_patterns": [EMAIL],
                               "ip": "truncated"}
    if allow:
        privacy["allow_properties"] = ["note"]
    config: dict[str, Any] = {"privacy": privacy}
    if projects:
        config["projects"] = [{"token": US_TOKEN, "region": "us"},
                              {"token": EU_TOKEN, "region": "eu"}]
    body = b"data=" + quote(base64.b64encode(json.dumps(events).encode())).encode()
    plan = Router(parse_config(config)).plan(RoutedRequest(
        endpoint="track", pinned_region=None, method="POST", query=b"ip=1", body=body,
        content_type="application/x-www-form-urlencoded"))
    sent: list[dict[str, Any]] = []
    for part in plan.parts:
        part_body = body if part.body is None else part.body
        sent += decode_payload(part_body, part.query or b"", "application/x-www-form-urlencoded",
                               part.content_encoding, DecodeLimits()).records
    key = ("distinct_id", "time", "token")
    assert sorted(json.dumps([e["event"], [e["properties"].get(k) for k in key]]) for e in sent) \
        == sorted(json.dumps([e["event"], [e["properties"].get(k) for k in key]]) for e in events)
    originals = {e["properties"].get("$insert_id") for e in events} - {None}
    assert originals <= {e["properties"].get("$insert_id") for e in sent}     # all kept
    for event in sent:
        assert "email" not in event["properties"]
        assert not any(re.search(EMAIL, json.dumps(v)) for k, v in event["properties"].items()
                       if k not in ("distinct_id", "$user_id", "$insert_id"))
