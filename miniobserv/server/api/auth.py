"""Bearer-JWT authentication for the API (SPEC §4).

Only ``Authorization: Bearer <jwt>`` is read. Tokens must be HS256, signed with
``AGENT_TOKEN``, carry an ``exp`` in the future (30 s leeway) and an ``iss`` of
``miniobserv-agent`` or ``miniobserv``. Every failure answers the same 401 without detail.
An optional ``scope`` claim narrows a token: ``ingest`` may only post, ``read`` may only
query; a valid token outside its scope answers 403.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import jwt
from flask import request

from miniobserv.server.api.context import current_config
from miniobserv.server.api.errors import ApiError
from miniobserv.tokens import ALGORITHM, ISSUERS, SCOPES

logger = logging.getLogger(__name__)

LEEWAY_S = 30
INGEST, READ = "ingest", "read"

F = TypeVar("F", bound=Callable[..., Any])


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", {"WWW-Authenticate": "Bearer"})


def forbidden() -> ApiError:
    return ApiError(403, "forbidden")


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None for anything else."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def decode_token(token: str, secret: str) -> dict[str, Any]:
    """Verify ``token`` and return its claims; raise the 401 ApiError on any failure."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], leeway=LEEWAY_S,
                            issuer=list(ISSUERS), options={"require": ["exp", "iss"]})
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as err:
        # Overflow/Type errors come from absurd claim values (exp: 1e400) in tokens that were
        # signed with the right secret; they are as invalid as any other.
        logger.info("token refused: %s", type(err).__name__)
        raise unauthorized() from None
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        # RFC 7519 NumericDate: a JSON number. PyJWT also takes a numeric string.
        logger.info("token refused: exp is not a number")
        raise unauthorized()
    return cast(dict[str, Any], claims)


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """The scopes a token grants: both without a ``scope`` claim, else those it names."""
    scope = claims.get("scope")
    if scope is None:
        return frozenset(SCOPES)
    if not isinstance(scope, str):
        return frozenset()
    return frozenset(scope.split()) & frozenset(SCOPES)


def authenticate(scope: str) -> dict[str, Any]:
    """Check the current request's token for ``scope``; return its claims or raise."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise unauthorized()
    claims = decode_token(token, current_config().agent_token)
    if scope not in token_scopes(claims):
        raise forbidden()
    return claims


def require(scope: str) -> Callable[[F], F]:
    """Decorate a view so it runs only for a valid token granting ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            authenticate(scope)
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorator


def require_dashboard(view: F) -> F:
    """Decorate a dashboard view: public, unless ``DASHBOARD_AUTH=token`` asks for a read token."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_config().dashboard_auth == "token":
            authenticate(READ)
        return view(*args, **kwargs)

    return cast(F, wrapped)
