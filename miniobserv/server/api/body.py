"""Reading request bodies safely: size limit before parsing, gzip, strict JSON (SPEC §3).

The limit is inclusive and holds twice: on the bytes received (checked against
``Content-Length`` before anything is read, then by a bounded read for chunked bodies) and
on the bytes after gunzip, which is done incrementally so a gzip bomb stops at the limit.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import IO, Any, Protocol

import orjson
from flask import request

from miniobserv.server.api.errors import ApiError, bad_request
from miniobserv.units import excerpt

READ_CHUNK = 64 * 1024
FIRST_SLICE = 64  # a member's first slice of input; each further one doubles
GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer, no raw deflate or zlib


class _NonFiniteError(ValueError):
    """A NaN or Infinity literal, which JSON does not allow."""


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"body: larger than the limit of {limit} bytes")


def read_limited(stream: IO[bytes], limit: int) -> bytes:
    """Read ``stream`` to its end; raise the 413 ApiError past ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(min(READ_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise too_large(limit)
        chunks.append(chunk)


class Decompressor(Protocol):
    """The part of ``zlib.decompressobj()`` that :func:`gunzip_limited` uses."""

    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes | memoryview, max_length: int = 0) -> bytes: ...


def new_gzip_decompressor() -> Decompressor:
    return zlib.decompressobj(GZIP_WBITS)


def gunzip_limited(data: bytes, limit: int,
                   decompressor: Callable[[], Decompressor] = new_gzip_decompressor) -> bytes:
    """Decompress gzip ``data`` (one or more members); 413 past ``limit``, 400 when corrupt.

    Linear in ``len(data)``: each member is fed slices of a memoryview that start small and
    double (up to READ_CHUNK), so the input a member leaves unused, which zlib copies into
    ``unused_data``, is at most one slice, never the rest of the body. ``decompressor``
    makes a new one per member (tests count the bytes handed to it).
    """
    view = memoryview(data)
    out: list[bytes] = []
    offset = total = 0
    while True:
        piece, offset = _member(view, offset, limit + 1 - total, decompressor())
        total += len(piece)
        if total > limit:
            raise too_large(limit)
        out.append(piece)
        if offset == len(view):
            return b"".join(out)
        if view[offset] == 0:  # trailing zero padding is tolerated, as by gzip(1)
            if not view[offset:].tobytes().strip(b"\x00"):
                return b"".join(out)
            raise bad_request("body", "is not valid gzip")


def _member(view: memoryview, offset: int, room: int,
            decompressor: Decompressor) -> tuple[bytes, int]:
    """Decompress the member starting at ``offset``: its output and the offset after it.

    Stops early, with the output so far, once ``room`` bytes came out (the caller's 413).
    """
    pieces: list[bytes] = []
    step = FIRST_SLICE
    while not decompressor.eof:
        if offset >= len(view):
            raise bad_request("body", "gzip data is truncated")
        chunk = view[offset:offset + step]
        try:
            piece = decompressor.decompress(chunk, room)
        except zlib.error:
            raise bad_request("body", "is not valid gzip") from None
        pieces.append(piece)
        room -= len(piece)
        if room <= 0:
            break
        offset += len(chunk) - len(decompressor.unused_data)
        step = min(step * 2, READ_CHUNK)
    return b"".join(pieces), offset


def _reject_constant(name: str) -> Any:
    raise _NonFiniteError(name)


def parse_json(data: bytes) -> Any:
    """Strict JSON: NaN/Infinity literals, bad UTF-8 and absurd nesting are 400s.

    orjson (C) parses the bodies it accepts, which are valid UTF-8 JSON documents; whatever it
    refuses goes through :func:`parse_json_strictly`, the standard library's parser, which
    gives today's answer: its error message, or the document when only orjson refuses it (a
    UTF-16 body or a BOM, an integer too large for a double, a lone surrogate escape that the
    model then refuses by field). orjson nests at most 1024 deep; the standard library stops
    at the recursion limit (about 1000), which is where "nested too deeply" comes from.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return parse_json_strictly(data)


def parse_json_strictly(data: bytes) -> Any:
    """:func:`parse_json` with the standard library's parser only (the refusals' wording)."""
    if not data.strip():
        raise bad_request("body", "is empty; expected a JSON object")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except _NonFiniteError as err:
        raise bad_request("body", f"{err} is not valid JSON (numbers must be finite)") from None
    except RecursionError:
        raise bad_request("body", "JSON is nested too deeply") from None
    except UnicodeDecodeError:
        raise bad_request("body", "is not valid UTF-8") from None
    except json.JSONDecodeError as err:
        raise bad_request("body", f"is not valid JSON ({excerpt(err, 120)})") from None
    except ValueError:  # an integer over sys.get_int_max_str_digits() digits
        raise bad_request("body", "has a number with too many digits") from None


def read_json_body(limit: int) -> Any:
    """The current request's JSON body, within ``limit`` bytes before and after gunzip."""
    length = request.content_length
    if length is not None and length > limit:
        raise too_large(limit)
    data = read_limited(request.stream, limit)
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        data = gunzip_limited(data, limit)
    elif encoding != "identity":
        raise ApiError(415, f"Content-Encoding: {encoding[:40]!r} is not supported (use gzip)")
    return parse_json(data)
