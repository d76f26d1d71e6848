"""Gzip bodies of many tiny members cost time linear in the body (issue 9, item 2).

Before, every member re-copied the rest of the body (zlib's ``unused_data``): 1 MiB of
members took 1.7 s, 8 MiB over 100 s. The proof here is structural, not timed: a counting
decompressor sums the bytes handed to ``decompress()`` and copied into ``unused_data``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest

from miniobserv.server.api import body
from miniobserv.server.api.errors import ApiError
from tests.security.bounded_support import auth, test_client


class Counting:
    """A gzip decompressor that counts the input it is given and the input it leaves."""

    fed = 0
    left = 0

    def __init__(self) -> None:
        self._inner = zlib.decompressobj(body.GZIP_WBITS)

    @property
    def eof(self) -> bool:
        return self._inner.eof

    @property
    def unused_data(self) -> bytes:
        return self._inner.unused_data

    def decompress(self, data: Any, max_length: int = 0) -> bytes:
        Counting.fed += len(data)
        out = self._inner.decompress(data, max_length)
        Counting.left += len(self._inner.unused_data)
        return out


@pytest.fixture
def counting() -> type[Counting]:
    Counting.fed = Counting.left = 0
    return Counting


def members(payload: bytes) -> bytes:
    """One gzip member per byte of ``payload`` (about 21 bytes each)."""
    return b"".join(gzip.compress(payload[i:i + 1], mtime=0) for i in range(len(payload)))


@pytest.mark.parametrize("count", [1, 1_000, 20_000])
def test_work_is_linear_in_the_body(counting: type[Counting], count: int) -> None:
    payload = bytes(range(97, 123)) * (count // 26) + b"a" * (count % 26)
    data = members(payload)
    assert body.gunzip_limited(data, len(payload), counting) == payload
    # Every input byte is handed over about once; what a member leaves unused is at most
    # its last slice. Before: the rest of the body per member, ~count/2 times the body.
    assert counting.fed <= 4 * len(data) + body.FIRST_SLICE
    assert counting.left <= counting.fed


def test_a_large_member_is_read_in_bounded_slices(counting: type[Counting]) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB that deflate cannot shrink much
    data = gzip.compress(payload) + gzip.compress(b"tail")
    assert body.gunzip_limited(data, len(payload) + 4, counting) == payload + b"tail"
    assert counting.fed <= 2 * len(data)
    assert counting.left <= 2 * body.READ_CHUNK


def test_behaviour_is_kept() -> None:
    two = gzip.compress(b"ab") + gzip.compress(b"cd")
    assert body.gunzip_limited(two, 4) == b"abcd"
    assert body.gunzip_limited(two + b"\x00" * 1000, 4) == b"abcd"  # zero padding
    for bad, status, message in [
            (two + b"\x00\x01", 400, "not valid gzip"),  # padding, then garbage
            (two + b"junk", 400, "not valid gzip"),
            (b"not gzip at all", 400, "not valid gzip"),
            (two[:-3], 400, "truncated"),
            (b"", 400, "truncated"),
            (two, 413, "larger than the limit of 3 bytes")]:
        with pytest.raises(ApiError) as caught:
            body.gunzip_limited(bad, 3 if status == 413 else 4)
        assert caught.value.status == status
        assert message in caught.value.message


def test_a_bomb_of_members_stops_at_the_limit(counting: type[Counting]) -> None:
    member = gzip.compress(b"\x00" * 1_000_000)  # ~1 KiB each
    with pytest.raises(ApiError) as caught:
        body.gunzip_limited(member * 1000, 2_500_000, counting)
    assert caught.value.status == 413
    assert counting.fed <= 8 * len(member)  # stopped in the third of 1000 members


def test_a_batch_in_tiny_members_is_accepted() -> None:
    batch = {"host": "web-01", "metrics": [
        {"time": "2026-01-01T00:00:00Z", "host": "web-01", "name": "mem.used_pct",
         "value": 1.5}]}
    data = members(json.dumps(batch).encode())
    response = test_client().post("/api/v1/metrics", data=data, headers={
        "Content-Encoding": "gzip", "Content-Type": "application/json", **auth("ingest")})
    assert response.status_code == 202, response.get_json()
