"""Durations and byte sizes as configuration writes them, and short excerpts of bad values.

A leaf module (it imports nothing of MiniObserv), so that :mod:`miniobserv.config` and
:mod:`miniobserv.rules` can both use it without importing each other.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.ASCII)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"(\d+) ?(kib|mib|gib)?", re.ASCII | re.IGNORECASE)
_SIZE_UNITS = {"": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
EXCERPT_LEN = 40  # how much of a bad value an error message repeats


class DurationTooLong(ValueError):
    """A well-formed duration longer than any bound (and than :class:`timedelta` can hold)."""


def excerpt(value: object, limit: int = EXCERPT_LEN) -> str:
    """``value``'s text cut to ``limit`` characters, ``…`` marking the cut.

    Error messages repeat bad input through this, so a 5000-digit value stays one short line.
    """
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``5m``, ``1h30m``, ``30d`` or ``250ms``; raise ValueError otherwise.

    A duration too long for :class:`timedelta` (about 2.7 million years) raises
    :class:`DurationTooLong`, a ValueError, so callers can name their bounds instead.
    """
    text = text.strip()
    pos, total = 0, 0.0
    if not text:
        raise ValueError("empty duration")
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"not a duration: {excerpt(text)!r} (use e.g. 10s, 5m, 1h, 30d)")
    try:
        return timedelta(seconds=total)
    except OverflowError:  # also float("1" + "0" * 400) == inf
        raise DurationTooLong(f"duration too long: {excerpt(text)!r}") from None


def parse_size(text: str) -> int:
    """Parse a byte count: ``1048576``, or with a binary suffix ``512KiB``, ``8MiB``, ``1GiB``.

    The suffix is case-insensitive and may follow one space; raise ValueError otherwise.
    """
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a size: {excerpt(text)!r} (use e.g. 1048576, 512KiB, 8MiB)")
    digits = m.group(1).lstrip("0") or "0"
    # Past 20 digits a count exceeds every bound; clamping keeps int() off its digit limit.
    number = int(digits) if len(digits) <= 20 else 10 ** 20
    return number * _SIZE_UNITS[(m.group(2) or "").lower()]


def format_size(value: int) -> str:
    """The shortest text :func:`parse_size` reads back (``8MiB``, ``1536KiB``, ``1000``)."""
    for unit in ("GiB", "MiB", "KiB"):
        size = _SIZE_UNITS[unit.lower()]
        if value and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def format_duration(value: timedelta) -> str:
    """The shortest text :func:`parse_duration` reads back (``5m``, ``1h30m``, ``500ms``)."""
    ms = round(value.total_seconds() * 1000)
    if ms % 1000:
        return f"{ms}ms"
    seconds, parts = ms // 1000, []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"
