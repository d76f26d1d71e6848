"""Attack tests of the fleet-wide reads (issue 10): read scope, tokens, hostile filters.

``/api/v1/metrics/latest``, ``/top`` and fleet-wide ``/query`` answer a whole fleet's data,
so they need a read token whatever DASHBOARD_AUTH says; the dashboard's mirror
``/api/v1/dashboard/fleet`` follows DASHBOARD_AUTH like the page's other data endpoints.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from miniobserv.model import format_time
from tests.security.auth_helpers import TOKENS, client_for

_TO = datetime.now(UTC).replace(microsecond=0)
_RANGE = f"from={format_time(_TO - timedelta(hours=1))}&to={format_time(_TO)}"
FLEET_READS = ["/api/v1/metrics/latest?name=cpu.usage_pct&label=core:total",
               f"/api/v1/metrics/top?name=cpu.usage_pct&{_RANGE}",
               f"/api/v1/metrics/query?name=cpu.usage_pct&{_RANGE}",
               f"/api/v1/metrics/query?name=cpu.usage_pct&group_by=host&{_RANGE}"]


@pytest.mark.parametrize("path", FLEET_READS)
@pytest.mark.parametrize("settings", [{}, {"dashboard_auth": "none", "metrics_auth": "none"}],
                         ids=["default", "everything-public"])
def test_fleet_reads_need_a_read_token(path: str, settings: dict[str, str]) -> None:
    client = client_for(**settings)
    assert (client.get(path).status_code, client.get(path).get_json()) == \
        (401, {"error": "unauthorized"})
    forbidden = client.get(path, headers=TOKENS.auth("ingest"))
    assert (forbidden.status_code, forbidden.get_json()) == (403, {"error": "forbidden"})
    assert client.get(path, headers=TOKENS.auth("read")).status_code == 200


@pytest.mark.parametrize("path", FLEET_READS)
def test_forged_tokens_read_nothing(path: str) -> None:
    client = client_for()
    for token in (TOKENS.unsigned(), TOKENS.unsigned("HS256"), TOKENS.craft(key="w" * 32),
                  TOKENS.craft(exp=1), TOKENS.craft(iss="someone")):
        response = client.get(path, headers=TOKENS.header(token))
        assert response.status_code == 401, token


def test_dashboard_fleet_follows_dashboard_auth() -> None:
    path = "/api/v1/dashboard/fleet?name=mem.used_pct"
    assert client_for().get(path).status_code == 401
    assert client_for().get(path, headers=TOKENS.auth("read")).status_code == 200
    assert client_for(dashboard_auth="none").get(path).status_code == 200
    assert client_for(dashboard_enabled=False).get(path).status_code == 404


@pytest.mark.parametrize("query", [
    "name=mem.used_pct&label=core:x'%20OR%20'1'='1",
    "name=mem.used_pct&label=a%22)%20OR%20(%22:1",
    "name=mem.used_pct&host=web-01'--",
    "name=mem.used_pct&within=1d%3BDROP",
    "name=mem.used_pct&label=" + "&label=".join(f"k{i}:v" for i in range(17)),
    "name=mem.used_pct&label=core:%00",
])
def test_hostile_latest_filters_are_values_or_400s(query: str) -> None:
    response = client_for().get(f"/api/v1/metrics/latest?{query}", headers=TOKENS.auth("read"))
    assert response.status_code in (200, 400)
    if response.status_code == 400:
        assert response.get_json()["error"].split(":")[0] in {"label", "host", "within"}
