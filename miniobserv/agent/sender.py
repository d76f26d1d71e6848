"""Ships batches to the server: gzip, token renewal, retries with backoff (SPEC §6).

The policy is pure (:func:`backoff_delay`, :func:`retry_after_seconds`, :func:`classify`);
the effects live in :meth:`Sender.send`, which never raises: it returns a
:class:`SendResult`. Every wait is ``stop.wait(delay)``, so shutdown cuts a backoff short.
"""

from __future__ import annotations

import dataclasses
import email.utils
import gzip
import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import requests

from miniobserv.model import LogBatch, MetricBatch
from miniobserv.tokens import mint_token
from miniobserv.units import excerpt

log = logging.getLogger(__name__)

Batch = MetricBatch | LogBatch

BASE_S = 1.0
CAP_S = 60.0
JITTER = 0.25
MAX_EXPONENT = 10  # retries never end: bound the exponent (2**10 s is far past the cap)

RETRY = "retry"
DROP = "drop"
SENT = "sent"
REAUTH = "reauth"

_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")]+")


def backoff_delay(attempt: int, rand: Callable[[], float] = random.random,
                  base: float = BASE_S, cap: float = CAP_S, jitter: float = JITTER) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    ``min(cap, base·2^(attempt-1))·(1 ± jitter·u)``, never above ``cap``; attempts below 1
    count as 1. ``rand`` returns a float in [0, 1]: 0 gives the shortest wait, 1 the longest.
    """
    exponent = min(max(attempt, 1) - 1, MAX_EXPONENT)
    delay = min(cap, base * 2.0 ** exponent)
    return min(cap, delay * (1 + jitter * (2 * rand() - 1)))


def retry_after_seconds(header: str | None, now: float) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta seconds or an HTTP-date).

    None when the header is missing or unreadable; a date in the past gives 0.
    """
    if not header:
        return None
    text = header.strip()
    try:
        return max(0.0, float(text)) if text.replace(".", "", 1).isdigit() else \
            max(0.0, email.utils.parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError, OverflowError):
        return None


def classify(status: int) -> str:
    """What to do after an HTTP status: SENT, REAUTH, RETRY or DROP."""
    if 200 <= status < 300:
        return SENT
    if status == 401:
        return REAUTH
    if status in (408, 429) or status >= 500:
        return RETRY
    return DROP


@dataclass(frozen=True)
class SendResult:
    """How one batch ended: ``sent``, ``dropped`` (permanent 4xx) or ``aborted`` (stopped)."""

    outcome: str
    attempts: int
    status: int | None = None

    @property
    def is_sent(self) -> bool:
        return self.outcome == "sent"


class TokenSource:
    """Mints the agent's 24 h token and renews it at 80 % of its life or on demand.

    ``max_ttl`` (the agent's ``TOKEN_MAX_TTL``) shortens the tokens when it is below 24 h,
    so a server refusing longer lifetimes still accepts them.
    """

    TTL = timedelta(hours=24)
    RENEW_AT = 0.8

    def __init__(self, secret: str, clock: Callable[[], float] = time.time,
                 max_ttl: timedelta | None = None) -> None:
        self._secret = secret
        self._clock = clock
        self.ttl = self.TTL if max_ttl is None else min(self.TTL, max_ttl)
        self._token: str | None = None
        self._renew_after = 0.0
        self.minted = 0

    def get(self) -> str:
        """A token with at least 20 % of its life left."""
        if self._token is None or self._clock() >= self._renew_after:
            self.renew()
        assert self._token is not None
        return self._token

    def renew(self) -> None:
        """Mint a new token now (after a 401, or when the current one is getting old)."""
        now = self._clock()
        self._token = mint_token(self._secret, ttl=self.ttl, now=now)
        self._renew_after = now + self.ttl.total_seconds() * self.RENEW_AT
        self.minted += 1


class Sender:
    """POSTs batches to ``server_url`` with one session, retrying until sent or stopped.

    Tunables are UPPER_CASE attributes so tests can shrink them.
    """

    BASE_S = BASE_S
    CAP_S = CAP_S
    JITTER = JITTER
    RETRY_AFTER_MAX_S = 300.0  # a server asking for more is not taken literally
    GZIP_LEVEL = 6
    PATHS = {MetricBatch: "/api/v1/metrics", LogBatch: "/api/v1/logs"}
    KINDS = {MetricBatch: "metric", LogBatch: "log"}  # for log lines

    def __init__(self, server_url: str, secret: str, stop: threading.Event | None = None,
                 timeout: float = 10.0, session: requests.Session | None = None,
                 rand: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.time,
                 token_max_ttl: timedelta | None = None) -> None:
        self.server_url = server_url.rstrip("/")
        self.stop = stop or threading.Event()
        self.timeout = timeout
        self.session = session or requests.Session()
        self.tokens = TokenSource(secret, clock, token_max_ttl)
        self.deadline: float | None = None  # time.monotonic() bound set during shutdown
        self._rand = rand
        self._clock = clock

    def close(self) -> None:
        self.session.close()

    def send(self, batch: Batch) -> SendResult:
        """Deliver one batch; retries 5xx/408/429/timeouts/connection errors without end.

        The ``batch_id`` is set once and kept across retries, so the server stores a batch
        whose response was lost only once. Returns when sent, dropped or stopped.
        """
        if batch.batch_id is None:
            batch = dataclasses.replace(batch, batch_id=uuid.uuid4())
        body = gzip.compress(json.dumps(batch.to_json(), separators=(",", ":")).encode(),
                             compresslevel=self.GZIP_LEVEL)
        url = self.server_url + self.PATHS[type(batch)]
        kind = self.KINDS[type(batch)]
        failures = attempts = 0
        previous: int | None = None
        while not self.stop.is_set():
            attempts += 1
            status, retry_after, reason = self._post(url, body)
            action = RETRY if status is None else classify(status)
            if action == SENT:
                return SendResult("sent", attempts, status)
            if action == DROP:
                log.warning("%s batch %s dropped: server answered %s", kind, batch.batch_id,
                            reason)
                return SendResult("dropped", attempts, status)
            failures += 1
            delay = self._delay(failures, retry_after)
            if action == REAUTH:
                self.tokens.renew()
                delay = delay if previous == 401 else 0.0  # a fresh token deserves one try now
            previous = status
            log.warning("%s batch %s not sent (%s); retry %d in %.1fs", kind, batch.batch_id,
                        reason, failures, delay)
            if self.stop.wait(delay):
                break
        return SendResult("aborted", attempts, None)

    def _delay(self, failures: int, retry_after: float | None) -> float:
        """The backoff; a ``Retry-After`` may lengthen it (up to its cap), never shorten it:
        a proxy that answers ``Retry-After: 0`` must not make the agent retry in a loop."""
        delay = backoff_delay(failures, self._rand, self.BASE_S, self.CAP_S, self.JITTER)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.RETRY_AFTER_MAX_S))
        return delay

    def _request_timeout(self) -> float:
        """REQUEST_TIMEOUT, shortened to what is left of the drain during shutdown."""
        if self.deadline is None:
            return self.timeout
        return max(0.05, min(self.timeout, self.deadline - time.monotonic()))

    def _post(self, url: str, body: bytes) -> tuple[int | None, float | None, str]:
        """One attempt: ``(status or None, Retry-After seconds or None, reason for logs)``."""
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip",
                   "Authorization": f"Bearer {self.tokens.get()}"}
        timeout = self._request_timeout()
        try:
            response = self.session.post(url, data=body, headers=headers, timeout=timeout)
        except requests.Timeout:
            return None, None, f"no answer within {timeout:g}s"
        except requests.ConnectionError as err:
            errno = _ERRNO.search(str(err))
            return None, None, f"cannot connect: {errno.group(0) if errno else _short(err)}"
        except requests.RequestException as err:
            return None, None, f"{type(err).__name__}: {_short(err)}"
        with response:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"), self._clock())
            reason = f"HTTP {response.status_code} {_short(response.text)}"
        return response.status_code, retry_after, reason


def _short(value: object, limit: int = 200) -> str:
    """A one-line excerpt of an error or response body for a log line."""
    return excerpt(" ".join(str(value).split()), limit)
