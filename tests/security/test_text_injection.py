"""Text that reaches people: hostile host names and labels in Slack, Discord and the logs.

A host name or label value is chosen by whoever holds an ingest token. Slack and Discord read
the alert line as markup, so each channel's text escapes them (no mention, link or markdown
can form); Discord is also told to ping no one. Control characters, which forge server log
lines, are refused at ingest with a 400 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from miniobserv.config import ServerConfig
from miniobserv.errors import ValidationError
from miniobserv.model import check_host, check_labels
from miniobserv.server.alerting.notify import body_for, discord_escape, slack_escape
from miniobserv.server.app import create_app
from tests.fakes import FakeRepositories
from tests.server.api.conftest import SECRET, Tokens
from tests.server.api.wire import batch, metric, recent

ZWSP = "\u200b"
AT = "2026-06-05T10:00:00Z"
RULE = {"host": "*", "name": "cpu.usage_pct", "labels": {}, "op": ">", "threshold": 90.0,
        "for": "5m"}


def firing(host: str, **labels: str) -> dict[str, Any]:
    return {"event": "firing", "host": host, "rule": RULE, "value": 97.5, "at": AT,
            "labels": labels}


def down(host: str) -> dict[str, Any]:
    return {"event": "host.down", "host": host, "rule": None, "value": None, "at": AT,
            "labels": {}}


# --- escaping, on the exact text sent ---------------------------------------------------------

@pytest.mark.parametrize(("hostile", "slack"), [
    ("<!channel> <https://evil|fix>", "&lt;!channel&gt; &lt;https://evil|fix&gt;"),
    ("<@U123>", "&lt;@U123&gt;"),
    ("<#C1>", "&lt;#C1&gt;"),
    ("<!here>", "&lt;!here&gt;"),
    ("a & b", "a &amp; b"),
    ("&lt;!channel&gt;", "&amp;lt;!channel&amp;gt;"),  # entities cannot be smuggled in either
    ("web-01", "web-01"),
])
def test_slack_text_escapes_the_host(hostile: str, slack: str) -> None:
    assert slack_escape(hostile) == slack
    assert body_for("slack", down(hostile)) == {"text": f"[HOST DOWN] {slack} at {AT}"}


@pytest.mark.parametrize(("hostile", "discord"), [
    ("@everyone", f"@{ZWSP}everyone"),
    ("@here", f"@{ZWSP}here"),
    ("<@123456>", f"<{ZWSP}@{ZWSP}123456\\>"),
    ("<@&987>", f"<{ZWSP}@{ZWSP}&987\\>"),
    ("<#C1>", f"<{ZWSP}#C1\\>"),
    ("[x](https://evil)", r"\[x\]\(https://evil\)"),
    ("`rm -rf`", r"\`rm -rf\`"),
    ("**bold** __u__ ~~s~~ ||spoiler|| > quote \\", r"\*\*bold\*\* \_\_u\_\_ \~\~s\~\~ "
                                                    r"\|\|spoiler\|\| \> quote \\"),
    ("<!channel> <https://evil|fix>", f"<{ZWSP}!channel\\> <{ZWSP}https://evil\\|fix\\>"),
    ("web-01", "web-01"),
])
def test_discord_content_escapes_the_host_and_pings_no_one(hostile: str, discord: str) -> None:
    assert discord_escape(hostile) == discord
    assert body_for("discord", down(hostile)) == {
        "content": f"[HOST DOWN] {discord} at {AT}", "allowed_mentions": {"parse": []}}


def test_label_keys_and_values_are_escaped_too() -> None:
    payload = firing("web-01", mount="<!channel>", role="@everyone")
    assert body_for("slack", payload)["text"] == (
        "[FIRING] web-01: cpu.usage_pct{mount=&lt;!channel&gt;,role=@everyone} > 90 for 5m "
        f"(value 97.5) at {AT}")
    assert body_for("discord", payload)["content"] == (
        f"[FIRING] web-01: cpu.usage\\_pct{{mount=<{ZWSP}!channel\\>,role=@{ZWSP}everyone}} "
        f"> 90 for 5m (value 97.5) at {AT}")


def test_the_generic_webhook_carries_the_values_raw() -> None:
    payload = firing("<!channel>", mount="@everyone")
    assert body_for("webhook", payload) == payload


# --- control characters are refused at ingest -------------------------------------------------

CONTROLS = ["\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\u202e",
            "\u2066"]


@pytest.fixture
def repos() -> FakeRepositories:
    return FakeRepositories()


@pytest.fixture
def client(repos: FakeRepositories) -> Iterator[FlaskClient]:
    app = create_app(ServerConfig(agent_token=SECRET, auto_migrate=False), repos)
    app.testing = True
    yield app.test_client()


def post(client: FlaskClient, path: str, body: Any) -> tuple[int, Any]:
    response = client.post(path, data=json.dumps(body), content_type="application/json",
                           headers=Tokens(SECRET).auth("ingest"))
    return response.status_code, response.get_json()


def log_entry(host: str) -> dict[str, Any]:
    return {"time": recent(), "host": host, "level": "info", "message": "ok"}


@pytest.mark.parametrize("char", CONTROLS)
def test_a_metric_batch_host_with_a_control_character_is_refused(
        client: FlaskClient, repos: FakeRepositories, char: str) -> None:
    host = f"web{char}01"
    assert post(client, "/api/v1/metrics", batch(host=host)) == (
        400, {"error": "host: must not contain control characters"})
    assert repos.metrics.rows == []


@pytest.mark.parametrize("char", ["\n", "\r", "\x1b", "\x7f", "\x85"])
def test_a_metric_host_with_a_control_character_is_refused(
        client: FlaskClient, repos: FakeRepositories, char: str) -> None:
    body = {"host": "web-01", "metrics": [metric(), metric(host=f"web{char}01")]}
    status, answer = post(client, "/api/v1/metrics", body)
    assert status == 400
    assert answer["error"].startswith("metrics[1].host: must not contain control characters")
    assert repos.metrics.rows == []


@pytest.mark.parametrize("char", ["\n", "\r", "\x1b", "\x7f", "\x85"])
def test_a_log_batch_host_or_entry_host_with_a_control_character_is_refused(
        client: FlaskClient, repos: FakeRepositories, char: str) -> None:
    host = f"web{char}01"
    assert post(client, "/api/v1/logs", {"host": host, "entries": [log_entry(host)]}) == (
        400, {"error": "host: must not contain control characters"})
    status, answer = post(client, "/api/v1/logs", {"host": "web-01", "entries": [
        log_entry("web-01"), log_entry(host)]})
    assert status == 400
    assert answer["error"].startswith("entries[1].host: must not contain control characters")
    assert repos.logs.rows == []


@pytest.mark.parametrize("char", ["\n", "\x1b", "\x85"])
def test_a_label_value_with_a_control_character_is_refused(
        client: FlaskClient, repos: FakeRepositories, char: str) -> None:
    status, answer = post(client, "/api/v1/metrics", batch(labels={"core": f"total{char}x"}))
    assert status == 400
    assert answer["error"].startswith("metrics[0].labels.core: must not contain control")
    assert repos.metrics.rows == []


def test_log_messages_keep_their_tabs_and_escapes(client: FlaskClient,
                                                  repos: FakeRepositories) -> None:
    entry = {**log_entry("web-01"), "message": "col1\tcol2 \x1b[31mred\x1b[0m"}
    assert post(client, "/api/v1/logs", {"host": "web-01", "entries": [entry]})[0] == 202
    assert repos.logs.rows[0].message == entry["message"]


def test_plain_unicode_host_names_and_labels_stay_accepted() -> None:
    assert check_host("  café-01.example  ") == "café-01.example"
    assert check_labels({"mount": "/mnt/données disk"}) == {"mount": "/mnt/données disk"}
    with pytest.raises(ValidationError, match="AGENT_HOST: must not contain control"):
        check_host("web\n01", "AGENT_HOST")
