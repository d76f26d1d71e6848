"""Minting HS256 JWTs from the shared ``AGENT_TOKEN`` secret (SPEC §4).

Shared by the agent (which mints its own 24 h tokens) and the CLI. The server verifies in
``miniobserv.server.api.auth``.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import jwt

ALGORITHM = "HS256"
ISSUERS = ("miniobserv-agent", "miniobserv")
SCOPES = ("ingest", "read")
DEFAULT_TTL = timedelta(hours=24)


def mint_token(secret: str, ttl: timedelta = DEFAULT_TTL, scope: str | None = None,
               issuer: str = "miniobserv-agent", subject: str | None = None,
               now: float | None = None) -> str:
    """Return a signed token valid for ``ttl``; ``scope`` narrows it to ingest or read."""
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if ttl.total_seconds() <= 0:
        raise ValueError("ttl must be positive")
    issued = int(time.time() if now is None else now)
    # jti: a renewed token differs from the one it replaces, even within the same second.
    claims: dict[str, object] = {"iss": issuer, "iat": issued,
                                 "exp": issued + int(ttl.total_seconds()),
                                 "jti": uuid.uuid4().hex}
    if scope is not None:
        claims["scope"] = scope
    if subject is not None:
        claims["sub"] = subject
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
