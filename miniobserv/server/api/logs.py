"""Log ingestion and queries: ``/api/v1/logs`` (SPEC §3).

Query parameters are all optional; an empty value (``?level=``, as an HTML form sends it) is
the same as leaving the parameter out. As with the first MiniObserv, ``limit=0`` means the
default and ``cursor=0`` the first page; ``q`` and ``search`` are one parameter under two
names (the SDK sends ``search``), and giving both with different values is a 400.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.datastructures import MultiDict

from miniobserv.errors import ValidationError
from miniobserv.model import (
    LEVELS,
    MAX_BATCH,
    MAX_MESSAGE_BYTES,
    MAX_PATH_LEN,
    check_host,
    check_level,
    format_time,
    parse_log_batch,
)
from miniobserv.server.api import openapi
from miniobserv.server.api.auth import INGEST, READ, require
from miniobserv.server.api.body import read_json_body
from miniobserv.server.api.context import current_config, current_repos
from miniobserv.server.api.metrics import parse_query_time
from miniobserv.server.api.openapi import Json
from miniobserv.server.storage.base import (
    DEFAULT_LOG_LIMIT,
    MAX_LOG_LIMIT,
    LogPage,
    LogQuery,
    LogRecord,
)

bp = Blueprint("logs", __name__, url_prefix="/api/v1/logs")

MAX_CURSOR = 2**63 - 1  # ids are 64-bit integers on every store
MAX_SEARCH_LEN = MAX_MESSAGE_BYTES  # a longer needle could match no message
# PostgreSQL's trigram index serves a substring of 3 characters or more; a shorter one would
# scan every message, so no store is asked for it.
MIN_SEARCH_LEN = 3
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


@bp.post("")
@require(INGEST)
def ingest() -> tuple[Response, int]:
    """Validate a whole batch, store it in one transaction, answer 202 with its size."""
    data = read_json_body(current_config().max_body_bytes)
    batch = parse_log_batch(data)
    count = current_repos().logs.insert_batch(batch)
    return jsonify(ingested=count), 202


@bp.get("/query")
@require(READ)
def query() -> Response:
    """Matching entries newest first, one page at a time (keyset ``cursor``)."""
    page = current_repos().logs.query(parse_log_query(request.args))
    return jsonify(query_answer(page))


def query_answer(page: LogPage) -> dict[str, Any]:
    """The wire shape of a page: ``{"entries": [...], "next_cursor": n | null}``."""
    return {"entries": [_entry(record) for record in page.entries],
            "next_cursor": page.next_cursor}


def _entry(record: LogRecord) -> dict[str, Any]:
    return {"id": record.id, "time": format_time(record.time), "host": record.host,
            "level": record.level, "message": record.message, "path": record.path}


# --- query parameters ----------------------------------------------------------------------


def parse_log_query(args: MultiDict[str, str]) -> LogQuery:
    """Validate the query-string parameters; raise ValidationError naming the parameter."""
    given = {key: value for key, value in args.items() if value != ""}
    host = given.get("host")
    level, min_level = given.get("level"), given.get("min_level")
    if level is not None and min_level is not None:
        raise ValidationError("min_level", "give level or min_level, not both")
    start = _time(given, "from")
    end = _time(given, "to")
    if start is not None and end is not None and start > end:
        raise ValidationError("from", "must not be after to")
    return LogQuery(
        host=None if host is None else check_host(host),
        level=None if level is None else check_level(level, "level"),
        min_level=None if min_level is None else check_level(min_level, "min_level"),
        start=start, end=end, search=_search(given),
        limit=min(_count(given, "limit") or DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT),
        cursor=_cursor(given))


def _time(given: dict[str, str], key: str) -> Any:
    return None if key not in given else parse_query_time(given[key], key)


def _search(given: dict[str, str]) -> str | None:
    q, search = given.get("q"), given.get("search")
    if q is not None and search is not None and q != search:
        raise ValidationError("search", "give q or search, not both")
    text = q if q is not None else search
    if text is None:
        return None
    key = "q" if q is not None else "search"
    if len(text) > MAX_SEARCH_LEN:
        raise ValidationError(key, f"must be at most {MAX_SEARCH_LEN} characters")
    if "\x00" in text:
        raise ValidationError(key, "must not contain NUL characters")
    if len(text) < MIN_SEARCH_LEN:
        raise ValidationError(key, f"must be at least {MIN_SEARCH_LEN} characters (a shorter "
                                   "text cannot use the search index)")
    return text


def _count(given: dict[str, str], key: str) -> int | None:
    """A non-negative decimal integer parameter, or None when absent."""
    text = given.get(key)
    if text is None:
        return None
    if _DIGITS.fullmatch(text) is None:
        if text.startswith("-") and _DIGITS.fullmatch(text[1:]):
            raise ValidationError(key, "must not be negative")
        raise ValidationError(key, "must be an integer")
    digits = text.lstrip("0") or "0"
    # Any number of digits is fine (a huge limit is clamped, a huge cursor refused) without
    # converting thousands of them.
    return int(digits) if len(digits) <= 19 else MAX_CURSOR + 1


def _cursor(given: dict[str, str]) -> int | None:
    cursor = _count(given, "cursor")
    if cursor is not None and cursor > MAX_CURSOR:
        raise ValidationError("cursor", "is not a cursor this server gave")
    return cursor or None  # 0: the first page, as the first MiniObserv read it


# --- the OpenAPI description ---------------------------------------------------------------

openapi.add_schema("LogEntry", {
    "type": "object", "required": ["time", "level", "message"],
    "properties": {
        "time": {**openapi.TIME, "description": "RFC 3339 with an offset; at most 10 minutes "
                                                "in the future"},
        "host": {**openapi.HOST, "description": "Equal to the batch host (inherited when "
                                                "absent)"},
        "level": {"type": "string", "enum": list(LEVELS)},
        "message": {"type": "string", "minLength": 1,
                    "description": f"At most {MAX_MESSAGE_BYTES} bytes in UTF-8; no NUL"},
        "path": {"type": "string", "maxLength": MAX_PATH_LEN,
                 "description": "The file the line came from"},
        "source": {"type": "string", "maxLength": MAX_PATH_LEN,
                   "description": "The SDK's name for path (used when path is absent)"},
        "labels": openapi.LABELS,
    },
})
openapi.add_schema("LogBatch", {
    "type": "object", "required": ["host", "entries"],
    "properties": {
        "host": openapi.HOST,
        "batch_id": {"type": "string", "format": "uuid",
                     "description": "A batch whose id was stored before is acknowledged "
                                    "again without being stored twice"},
        "entries": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                    "items": openapi.ref("LogEntry")},
    },
})
openapi.add_schema("StoredLogEntry", {
    "type": "object", "required": ["id", "time", "host", "level", "message", "path"],
    "properties": {
        "id": {"type": "integer", "format": "int64", "minimum": 1,
               "description": "Larger ids arrived later"},
        "time": {**openapi.TIME, "description": "The entry's own time, UTC"},
        "host": {"type": "string"},
        "level": {"type": "string", "enum": list(LEVELS)},
        "message": {"type": "string"},
        "path": {"type": "string", "nullable": True},
    },
})
openapi.add_schema("LogPage", {
    "type": "object", "required": ["entries", "next_cursor"],
    "properties": {
        "entries": {"type": "array", "items": openapi.ref("StoredLogEntry"),
                    "description": "Newest first (descending id)"},
        "next_cursor": {"type": "integer", "format": "int64", "nullable": True,
                        "description": "Pass as cursor for the next page; null on the last"},
    },
})

_LEVEL: Json = {"type": "string", "enum": list(LEVELS)}
LOG_QUERY_PARAMS: list[Json] = [openapi.empty_allowed(parameter) for parameter in [
    openapi.query_param("host", "Only this host", {"type": "string"}),
    openapi.query_param("level", "Only this level", _LEVEL),
    openapi.query_param("min_level", "This level and the more severe ones (not with level)",
                        _LEVEL),
    openapi.query_param("from", "Window start (inclusive), RFC 3339", openapi.TIME),
    openapi.query_param("to", "Window end (inclusive), RFC 3339; not before from",
                        openapi.TIME),
    openapi.query_param("q", "Case-insensitive literal substring of the message (% and _ "
                             "match themselves). ASCII letters fold on every store; other "
                             "letters only on PostgreSQL under a non-C locale",
                        {"type": "string", "minLength": MIN_SEARCH_LEN,
                         "maxLength": MAX_SEARCH_LEN}),
    openapi.query_param("search", "Another name for q",
                        {"type": "string", "minLength": MIN_SEARCH_LEN,
                         "maxLength": MAX_SEARCH_LEN}),
    openapi.query_param("limit", f"Page size; 0 means the default, above {MAX_LOG_LIMIT} is "
                                 f"clamped to {MAX_LOG_LIMIT}",
                        {"type": "integer", "minimum": 0, "default": DEFAULT_LOG_LIMIT}),
    openapi.query_param("cursor", "The next_cursor of the previous page (0: the first page)",
                        {"type": "integer", "format": "int64", "minimum": 0}),
]]  # an empty value (?level=, as an HTML form sends it) is the same as none
openapi.add_operation("/api/v1/logs", "post", {
    "summary": "Ingest a log batch (stored whole or not at all)", "tags": ["logs"],
    "security": openapi.BEARER, "x-token-scope": "ingest", "parameters": [openapi.GZIP_HEADER],
    "requestBody": {"required": True, "content": openapi.json_content(openapi.ref("LogBatch"))},
    "responses": {"202": openapi.response("Stored (or a known batch_id acknowledged)",
                                          "Ingested"),
                  **openapi.errors("400", "401", "403", "409", "413", "415", "503")}})
openapi.add_operation("/api/v1/logs/query", "get", {
    "summary": "Log entries, newest first, paged by a keyset cursor", "tags": ["logs"],
    "security": openapi.BEARER, "x-token-scope": "read", "parameters": LOG_QUERY_PARAMS,
    "responses": {"200": openapi.response("One page of entries", "LogPage"),
                  **openapi.errors("400", "401", "403", "503")}})
