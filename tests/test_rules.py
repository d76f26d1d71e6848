"""ALERT_RULES and ALERT_NOTIFICATIONS: parsed at start, every mistake named (SPEC §5)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from miniobserv.config import ServerConfig
from miniobserv.errors import ConfigError
from miniobserv.rules import AlertRule, Notification, is_http_url, parse_alert_rules

SECRET = "s" * 32
RULE = {"host": "*", "name": "cpu.usage_pct", "labels": {"core": "total"}, "op": ">",
        "threshold": 90, "for": "5m"}


def server(**env: str) -> ServerConfig:
    return ServerConfig.from_env({"AGENT_TOKEN": SECRET, **env})


def refused(**env: str) -> str:
    with pytest.raises(ConfigError) as info:
        server(**env)
    return str(info.value)


def rules_env(*items: dict[str, Any]) -> str:
    return json.dumps(list(items))


def test_the_spec_example_parses() -> None:
    config = server(ALERT_RULES=rules_env(RULE), ALERT_NOTIFICATIONS=json.dumps(
        [{"type": "webhook", "url": "http://127.0.0.1:9/hook"},
         {"type": "slack", "url": "https://hooks.slack.com/services/T/B/X"},
         {"type": "discord", "url": "https://discord.com/api/webhooks/1/abc"}]))
    assert config.alert_rules == (AlertRule(host="*", name="cpu.usage_pct", op=">",
                                            threshold=90.0, for_=timedelta(minutes=5),
                                            labels=(("core", "total"),)),)
    assert [n.type for n in config.alert_notifications] == ["webhook", "slack", "discord"]
    assert config.alert_rules[0].to_json() == {**RULE, "threshold": 90.0}


def test_defaults_labels_empty_and_for_zero() -> None:
    rule = parse_alert_rules([{"host": "web-01", "name": "mem.used_pct", "op": "<=",
                               "threshold": 1.5}])[0]
    assert (rule.labels, rule.for_, rule.to_json()["for"]) == ((), timedelta(0), "0s")
    assert rule.describe() == "mem.used_pct <= 1.5 for 0s"


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "cpu_usage_pct"}, "ALERT_RULES[1].name: unknown metric name 'cpu_usage_pct'"),
    ({"name": 7}, "ALERT_RULES[1].name: unknown metric name '7'"),
    ({"op": "=>"}, "ALERT_RULES[1].op: unknown operator '=>': use one of >, <, >=, <="),
    ({"op": "=="}, "ALERT_RULES[1].op: unknown operator '=='"),
    ({"threshold": "90"}, "ALERT_RULES[1].threshold: must be a finite number"),
    ({"threshold": True}, "ALERT_RULES[1].threshold: must be a finite number"),
    ({"threshold": 1e400}, "ALERT_RULES[1].threshold: must be a finite number"),
    ({"for": "5 minutes"}, "ALERT_RULES[1].for: '5 minutes' is not a duration"),
    ({"for": 300}, "ALERT_RULES[1].for: must be a duration"),
    ({"for": "8d"}, "ALERT_RULES[1].for: must be at most 7d"),
    ({"for": "7d1ms"}, "ALERT_RULES[1].for: must be at most 7d"),
    ({"for": "99999999999999999999d"}, "ALERT_RULES[1].for: must be at most 7d"),
    ({"for": "1" + "0" * 400 + "s"}, "ALERT_RULES[1].for: must be at most 7d"),
    ({"for": "x" * 500}, "ALERT_RULES[1].for: '" + "x" * 40 + "…' is not a duration"),
    ({"name": "n" * 500}, "ALERT_RULES[1].name: unknown metric name '" + "n" * 128 + "…'"),
    ({"threshold": -1e400}, "ALERT_RULES[1].threshold: must be a finite number"),
    ({"host": " "}, "ALERT_RULES[1].host: must not be empty"),
    ({"labels": {"core": ""}}, "ALERT_RULES[1].labels.core: must not be empty"),
    ({"labels": ["core"]}, "ALERT_RULES[1].labels: must be an object"),
    ({"Op": ">"}, "ALERT_RULES[1].Op: unknown key"),
    ({"severity": "high"}, "ALERT_RULES[1].severity: unknown key"),
])
def test_bad_rules_name_the_item_and_field(change: dict[str, Any], message: str) -> None:
    bad = {**RULE, **change}
    assert refused(ALERT_RULES=rules_env(RULE, bad)).startswith(message)


@pytest.mark.parametrize("missing", ["host", "name", "op", "threshold"])
def test_required_rule_keys(missing: str) -> None:
    item = {key: value for key, value in RULE.items() if key != missing}
    assert refused(ALERT_RULES=rules_env(item)) == f"ALERT_RULES[0].{missing}: is required"


def test_for_at_its_bound_and_fractions() -> None:
    assert parse_alert_rules([{**RULE, "for": "7d"}])[0].for_ == timedelta(days=7)
    assert parse_alert_rules([{**RULE, "for": "1m30s"}])[0].to_json()["for"] == "1m30s"


def test_custom_names_are_accepted() -> None:
    assert parse_alert_rules([{**RULE, "name": "custom.queue.depth"}])[0].name == \
        "custom.queue.depth"


@pytest.mark.parametrize(("item", "message"), [
    ({"type": "email", "url": "http://x"}, "ALERT_NOTIFICATIONS[0].type: unknown notification "
                                           "type 'email': use one of webhook, slack, discord"),
    ({"url": "http://x"}, "ALERT_NOTIFICATIONS[0].type: unknown notification type"),
    ({"type": "webhook"}, "ALERT_NOTIFICATIONS[0].url: must be an http:// or https:// URL"),
    ({"type": "slack", "url": "ftp://x/y"}, "ALERT_NOTIFICATIONS[0].url: must be an http"),
    ({"type": "slack", "url": "https://"}, "ALERT_NOTIFICATIONS[0].url: must be an http"),
    ({"type": "webhook", "url": "http://x", "secret": "y"},
     "ALERT_NOTIFICATIONS[0].secret: unknown key"),
])
def test_bad_notifications_name_the_item_and_field(item: dict[str, Any], message: str) -> None:
    assert refused(ALERT_NOTIFICATIONS=json.dumps([item])).startswith(message)


def test_a_url_is_never_echoed_or_shown_in_repr() -> None:
    secret_url = "https://hooks.slack.com/services/T000/B000/SECRETSECRET"
    message = refused(ALERT_NOTIFICATIONS=json.dumps([{"type": "chat", "url": secret_url}]))
    assert "SECRET" not in message
    assert "SECRET" not in repr(Notification("slack", secret_url))
    assert "SECRET" not in repr(server(ALERT_NOTIFICATIONS=json.dumps(
        [{"type": "slack", "url": secret_url}])))


@pytest.mark.parametrize(("url", "ok"), [
    ("http://127.0.0.1:8080/hook", True), ("https://example.com", True),
    ("http://[::1]:9/x", True), ("http://host:0/x", False), ("http://host:99999/", False),
    ("http:///path", False), ("http://a b/", False), ("mailto:x@y", False), ("", False),
])
def test_http_urls(url: str, ok: bool) -> None:
    assert is_http_url(url) is ok


def test_rule_keys_are_stable_and_differ_by_definition() -> None:
    a = parse_alert_rules([RULE])[0]
    assert a.key == parse_alert_rules([dict(reversed(list(RULE.items())))])[0].key
    assert a.key != parse_alert_rules([{**RULE, "threshold": 91}])[0].key
    assert a.key != parse_alert_rules([{**RULE, "host": "web-01"}])[0].key


@pytest.mark.parametrize(("op", "value", "holds"), [
    (">", 90.0, False), (">", 90.5, True), (">=", 90.0, True), ("<", 90.0, False),
    ("<", 89.9, True), ("<=", 90.0, True), ("<=", 90.1, False)])
def test_operators_at_the_threshold(op: str, value: float, holds: bool) -> None:
    assert parse_alert_rules([{**RULE, "op": op}])[0].holds(value) is holds


@pytest.mark.parametrize("threshold", ["1" + "0" * 400, "-1" + "0" * 400])
def test_integer_threshold_past_float_range(threshold: str) -> None:
    # Written into the JSON text itself: json.dumps of a float could not carry it.
    text = json.dumps([RULE]).replace('"threshold": 90', f'"threshold": {threshold}')
    assert refused(ALERT_RULES=text) == "ALERT_RULES[0].threshold: must be a finite number"


def test_largest_float_threshold_is_accepted() -> None:
    text = json.dumps([RULE]).replace('"threshold": 90', '"threshold": 1' + "0" * 308)
    assert server(ALERT_RULES=text).alert_rules[0].threshold == 1e308
