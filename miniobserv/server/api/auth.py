"""Bearer-JWT authentication for the API (SPEC §4).

Only ``Authorization: Bearer <jwt>`` is read. Tokens must be HS256, signed with
``AGENT_TOKEN``, carry an ``exp`` in the future (30 s leeway) and an ``iss`` of
``miniobserv-agent`` or ``miniobserv``, and live no longer than ``TOKEN_MAX_TTL``. Every
failure answers the same 401 without detail. An optional ``scope`` claim narrows a token:
``ingest`` may only post, ``read`` may only query; a valid token outside its scope answers
403. With ``READ_SECRET`` set, read tokens are signed with it and AGENT_TOKEN's tokens
carry the ingest scope only (a read with one is that 403, and so is an ingest with a
READ_SECRET token).

Reads are never public by default: the dashboard's data, ``/api/v1/hosts`` and
``/api/v1/alerts`` are public only under ``DASHBOARD_AUTH=none`` with the dashboard enabled,
``/metrics`` only under ``METRICS_AUTH=none``, and log search never.

A token that verified is remembered by the process (``VERIFIED_TOKENS`` of them, least
recently used out first), keyed by the token and everything its verification depended on
(the secrets, what each grants, ``TOKEN_MAX_TTL``), so that an agent's next batches skip the
signature check (9.6 % of a worker's CPU under agent-shaped load). Its times are checked
again at each use: an expired token is refused at its first use past ``exp`` (and its 30 s
leeway). A refused token is never remembered: it is verified again, and refused again, at
each use.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

import jwt
from flask import request

from miniobserv.config import ServerConfig
from miniobserv.server.api.context import current_config
from miniobserv.server.api.errors import ApiError
from miniobserv.tokens import ALGORITHM, ISSUERS, SCOPES

logger = logging.getLogger(__name__)

LEEWAY_S = 30
VERIFIED_TOKENS = 1024  # tokens remembered per process after their verification
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


class TokenRefused(Exception):
    """A token that does not verify; the message is the reason, logged, never answered."""


class WrongKey(TokenRefused):
    """The signature does not match the secret tried."""


def verified_claims(token: str, secret: str, max_ttl: timedelta | None = None,
                    now: float | None = None) -> dict[str, Any]:
    """The claims of ``token`` signed with ``secret``; raise :class:`TokenRefused` otherwise.

    ``max_ttl`` bounds the token's lifetime (``exp - iat``, or ``exp - now`` without ``iat``):
    a token minted for a year is refused even while it is young. The lifetime gets no
    leeway. A wrong signature raises :class:`WrongKey` (a TokenRefused), so that a caller
    holding several secrets can try the next one.
    """
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], leeway=LEEWAY_S,
                            issuer=list(ISSUERS), options={"require": ["exp", "iss"]})
    except jwt.InvalidSignatureError:
        raise WrongKey("InvalidSignatureError") from None
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as err:
        # Overflow/Type errors come from absurd claim values (exp: 1e400) in tokens that were
        # signed with the right secret; they are as invalid as any other.
        raise TokenRefused(type(err).__name__) from None
    exp, iat = claims["exp"], claims.get("iat", None)
    if not _is_number(exp):
        # RFC 7519 NumericDate: a JSON number. PyJWT also takes a numeric string.
        raise TokenRefused("exp is not a number")
    if iat is not None and not _is_number(iat):
        raise TokenRefused("iat is not a number")
    check_times(claims, max_ttl, now)
    return cast(dict[str, Any], claims)


def check_times(claims: dict[str, Any], max_ttl: timedelta | None = None,
                now: float | None = None) -> None:
    """Raise TokenRefused when the verified ``claims`` have expired at ``now`` (with the
    leeway, as PyJWT decides) or live longer than ``max_ttl`` (see :func:`verified_claims`)."""
    current = time.time() if now is None else now
    exp, iat = claims["exp"], claims.get("iat", None)
    if exp <= current - LEEWAY_S:
        raise TokenRefused("ExpiredSignatureError")
    if max_ttl is not None and exp - (iat if iat is not None else current) \
            > max_ttl.total_seconds():
        raise TokenRefused("lifetime above TOKEN_MAX_TTL")


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


Keys = tuple[tuple[str, frozenset[str]], ...]  # secrets, each with the scopes it may grant


def signing_keys(config: ServerConfig) -> Keys:
    """Each secret a token may be signed with, and the scopes it may grant.

    Without ``READ_SECRET``, AGENT_TOKEN grants both; with it, AGENT_TOKEN grants ingest
    only and READ_SECRET read only, so a host's secret no longer reads the fleet's logs.
    """
    if config.read_secret is None:
        return ((config.agent_token, frozenset(SCOPES)),)
    return ((config.agent_token, frozenset({INGEST})),
            (config.read_secret, frozenset({READ})))


def verify(token: str, config: ServerConfig,
           now: float | None = None) -> tuple[dict[str, Any], frozenset[str]]:
    """The claims of ``token`` and the scopes its signing key may grant; else the 401.

    A token signed with a known secret but outside what that secret grants is valid: the
    caller answers 403 for it, as for any valid token outside its scope. The signature is
    checked once per process and token (:func:`_verified`, bounded); the times at each use.
    """
    try:
        claims, grantable = _verified(token, signing_keys(config), config.token_max_ttl)
        check_times(claims, config.token_max_ttl, now)
    except TokenRefused as err:
        logger.info("token refused: %s", err)
        raise unauthorized() from None
    return dict(claims), grantable


@functools.lru_cache(maxsize=VERIFIED_TOKENS)
def _verified(token: str, keys: Keys, max_ttl: timedelta | None
              ) -> tuple[dict[str, Any], frozenset[str]]:
    """The claims of ``token`` under the first of ``keys`` that signed it, and what that key
    grants; raise TokenRefused. Remembered (least recently used out), never when it raises:
    the key is the token with everything its verification read, so another secret, another
    grant or another TOKEN_MAX_TTL verifies again. The claims are never handed out as they
    are (:func:`verify` copies them)."""
    reason = "no key"
    for secret, grantable in keys:
        try:
            return verified_claims(token, secret, max_ttl), grantable
        except WrongKey as err:
            reason = str(err)
        except TokenRefused:  # signed with this key, or malformed: no key does better
            raise
    raise TokenRefused(reason)


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
    claims, grantable = verify(token, current_config())
    if scope not in token_scopes(claims) & grantable:
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


def require_read_unless(is_public: Callable[[ServerConfig], bool]) -> Callable[[F], F]:
    """Decorate a view that needs a read token unless ``is_public(config)`` says otherwise."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not is_public(current_config()):
                authenticate(READ)
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorator


def is_dashboard_public(config: ServerConfig) -> bool:
    """``DASHBOARD_AUTH=none`` with the dashboard enabled; without it nothing is public."""
    return config.dashboard_enabled and config.dashboard_auth == "none"


def is_metrics_public(config: ServerConfig) -> bool:
    """``METRICS_AUTH=none``: the Prometheus convention of an open ``/metrics``."""
    return config.metrics_auth == "none"


require_dashboard = require_read_unless(is_dashboard_public)
require_metrics = require_read_unless(is_metrics_public)
