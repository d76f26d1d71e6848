"""No request adds a series to the server's own telemetry (issue 9, item 2).

Before, any token of 3-20 letters was counted as its own ``method`` label: 17 permanent
series per token (200 requests took ``/metrics`` from 14 lines to 3,431).
"""

from __future__ import annotations

import random
import string

import pytest
from flask.testing import FlaskClient

from miniobserv.server import telemetry
from tests.security.bounded_support import auth, test_client

KNOWN = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


def own_lines(client: FlaskClient) -> list[str]:
    """The lines of the server's own HTTP series in the exposition."""
    response = client.get("/metrics", headers=auth())
    assert response.status_code == 200
    return [line.rsplit(" ", 1)[0] for line in response.get_data(as_text=True).splitlines()
            if line.startswith("miniobserv_http_")]  # the series, without its value


def test_random_methods_and_paths_add_no_series() -> None:
    client = test_client()
    # One request of each known method and one unknown method, on a route and off the routes.
    for method in (*KNOWN, "BREW"):
        for path in ("/healthz", "/no/such/path"):
            client.open(path, method=method)
    own_lines(client)  # counts the GET of /metrics itself
    before = own_lines(client)
    rand = random.Random(9)
    for _ in range(200):
        method = "".join(rand.choices(string.ascii_uppercase, k=rand.randint(3, 20)))
        path = "".join("/" + "".join(rand.choices(string.ascii_lowercase, k=rand.randint(1, 9)))
                       for _ in range(rand.randint(1, 4)))
        client.open(rand.choice((path, "/healthz")), method=rand.choice((method, "GET")))
    after = own_lines(client)
    assert len(after) == len(before), sorted(set(after) - set(before))[:3]
    assert 'method="BREW"' not in "".join(after)
    assert 'miniobserv_http_requests_total{method="other",route="(unmatched)",status="405"}' \
        in "\n".join(after)


@pytest.mark.parametrize("method", KNOWN)
def test_known_methods_keep_their_label(method: str) -> None:
    assert telemetry.method_label(method) == method


@pytest.mark.parametrize("method", ["BREW", "get", "PROPFIND", "X" * 20, ""])
def test_other_methods_count_as_other(method: str) -> None:
    assert telemetry.method_label(method) == "other"


@pytest.mark.parametrize(("status", "label"), [
    (100, "100"), (200, "200"), (599, "599"), (99, "other"), (600, "other"), (0, "other"),
    (999, "other")])
def test_status_label_is_a_real_status_or_other(status: int, label: str) -> None:
    assert telemetry.status_label(status) == label
