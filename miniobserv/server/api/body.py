"""Reading request bodies safely: size limit before parsing, gzip, strict JSON (SPEC §3).

The limit is inclusive and holds twice: on the bytes received (checked against
``Content-Length`` before anything is read, then by a bounded read for chunked bodies) and
on the bytes after gunzip, which is done incrementally so a gzip bomb stops at the limit.
"""

from __future__ import annotations

import json
import zlib
from typing import IO, Any

from flask import request

from miniobserv.config import excerpt
from miniobserv.server.api.errors import ApiError, bad_request

READ_CHUNK = 64 * 1024
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


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress gzip ``data`` (one or more members); 413 past ``limit``, 400 when corrupt."""
    out: list[bytes] = []
    total = 0
    while True:
        decompressor = zlib.decompressobj(GZIP_WBITS)
        try:
            piece = decompressor.decompress(data, limit + 1 - total)
        except zlib.error:
            raise bad_request("body", "is not valid gzip") from None
        total += len(piece)
        if total > limit:
            raise too_large(limit)
        if not decompressor.eof:
            raise bad_request("body", "gzip data is truncated")
        out.append(piece)
        data = decompressor.unused_data
        if not data.strip(b"\x00"):  # trailing zero padding is tolerated, as by gzip(1)
            return b"".join(out)


def _reject_constant(name: str) -> Any:
    raise _NonFiniteError(name)


def parse_json(data: bytes) -> Any:
    """Strict JSON: NaN/Infinity literals, bad UTF-8 and absurd nesting are 400s."""
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
