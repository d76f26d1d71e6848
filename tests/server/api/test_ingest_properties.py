"""POST /api/v1/metrics and /api/v1/logs with any body (Hypothesis; derandomized, bounded).

Whatever JSON (or bytes) a client posts, plain or gzipped, the answer is a 202 with the count
of records stored, or the JSON error envelope naming a field: 400 (``metrics[2].labels.core:
...``, ``body: ...``) or 409 (``batch_id: ...``). Never a 500, never another shape. Through
Flask's test client over the fake repositories (tests/test_model_properties.py checks the
validation functions themselves).
"""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes import FakeRepositories
from tests.server.api.conftest import Tokens
from tests.strategies import FUZZ, log_batch_like, metric_batch_like

FIELD = re.compile(r"(body|host|batch_id|metrics|entries)(\[\d+\])?[.:]", re.DOTALL)
ENDPOINTS = {"/api/v1/metrics": ("metrics", metric_batch_like),
             "/api/v1/logs": ("entries", log_batch_like)}
# The fixtures (an app over fakes) are shared by a test's examples, as a server is by its
# clients: records accumulate, batch_ids may repeat (a 409 is then a right answer).
SHARED_FIXTURES = settings(FUZZ, max_examples=200,
                           suppress_health_check=[HealthCheck.function_scoped_fixture])


def body_bytes(draw: st.DrawFn, document: Any) -> tuple[bytes, dict[str, str]]:
    """``document`` as JSON (ASCII-escaped, so lone surrogates survive), maybe gzipped; or,
    sometimes, bytes that are no JSON at all."""
    if draw(st.integers(0, 19)) == 19:
        return draw(st.binary(max_size=64)), {}
    data = json.dumps(document).encode()
    if draw(st.booleans()):
        return gzip.compress(data), {"Content-Encoding": "gzip"}
    return data, {}


@pytest.mark.parametrize("url", sorted(ENDPOINTS))
@SHARED_FIXTURES
@given(data=st.data())
def test_any_body_is_stored_or_refused_naming_a_field(
        url: str, data: st.DataObject, client: FlaskClient, tokens: Tokens,
        repos: FakeRepositories) -> None:
    key, batch_like = ENDPOINTS[url]
    document = data.draw(batch_like(datetime.now(UTC)))
    body, headers = body_bytes(data.draw, document)
    response = client.post(url, data=body, content_type="application/json",
                           headers={**tokens.auth("ingest"), **headers})
    assert response.is_json, response.data
    answer = response.get_json()
    if response.status_code == 202:
        assert answer == {"ingested": len(document[key])}
        return
    assert response.status_code in (400, 409), (response.status_code, answer)
    assert list(answer) == ["error"]
    assert FIELD.match(answer["error"]), answer["error"]
    if response.status_code == 409:
        assert answer["error"].startswith("batch_id: ")
