"""The level and the time of one log line (SPEC §6, log tailing).

:func:`parse_line` returns ``(level, time)``: ``level`` is one of the model's four levels and
``time`` an aware UTC datetime. It never raises; a line it does not understand is ``info`` at
the read time.

Where the level comes from, first match wins:

* JSON objects: ``level``, ``severity``, ``lvl``, ``levelname``, ``loglevel``, ``log.level``
  (flat or nested), ``@l``; MongoDB's ``s``. Words, slog's ``ERROR+2``, syslog numbers 0–7
  (GELF) and bunyan/pino numbers 10–60 are understood. Without a level field, the text in
  ``log``/``msg``/``message`` (Docker's json-file, CRI) is parsed as a line. Invalid JSON falls
  through to the text rules.
* A syslog ``<PRI>`` prefix (RFC 3164/5424, systemd's ``<3>`` convention).
* Fixed shapes whose level sits in a known column: Kubernetes klog/glog ``E1205 10:00:00.0…``,
  Android logcat (``E/Tag( 12):`` and threadtime), Redis (``#`` warn), and the common/combined
  access log of nginx and Apache, where the status gives the level (5xx error, 4xx warn, as
  Datadog's pipelines do).
* After a leading timestamp (ISO 8601, ``2026/06/05 10:00:00``, ``Jun  5 10:00:00 host prog:``,
  bracketed Apache/PHP/gunicorn times, a bare ``10:00:00.123``), the first five tokens are
  searched: ``[error]``, ``[core:error]``, ``<err>`` in any case; an upper-case word
  (``ERROR``, ``ERROR:``, ``ERRO[0000]``); any-case ``Error:`` or a plain ``error``/``warning``…
  only as the first word.
* Without a timestamp only the first word counts (after leading ``[…]`` tokens):
  ``[WARN] …``, ``ERROR:root:…``, ``Warning: …``, ``error connecting``; and a line that opens
  a stack trace (``Traceback (most recent call last):``, ``java.lang.X: …``, ``ValueError: …``)
  is an error.
* logfmt lines (``key=value …``): ``level=``/``lvl=``/``severity=``.
* Otherwise ``info``.

Decisions: words in the middle of a message are never levels, so ``no error found`` is
``info`` and ``Error found`` is ``error``. Words that also occur in prose (``alert``, ``notice``,
``crit``, ``err``, ``severe``, ``log``, ``detail``…) count only in an explicit level slot
(brackets, a JSON or logfmt field, a colon right after them) or written in capitals. Single
letters (E, W, I, D, F) count only in the klog and logcat columns and in JSON/logfmt level
fields. PostgreSQL ``DETAIL``/``HINT``/``STATEMENT``/``CONTEXT`` lines are ``info`` (they are
separate lines following the primary message).

Time: a timestamp at the head of the line, in the JSON ``time``/``ts``/``timestamp``/
``@timestamp``/``@t`` field (RFC 3339 text or epoch seconds, milliseconds, microseconds or
nanoseconds, told apart by magnitude) or in a logfmt ``time=``/``ts=`` field is the entry's
time. With a zone (``Z``, ``±hh:mm``, ``±hhmm``, ``UTC``/``GMT``) it is that instant; zone-less
times (and other zone names) are local time of the agent host. Year-less stamps (syslog, klog,
logcat) take the year that puts them at most a day after the read time. A time more than
:data:`MAX_AHEAD` after the read time is a misreading (a wrong zone, say) and the read time is
used instead, so the server never refuses the batch for a time in the future.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

MAX_AHEAD = timedelta(minutes=2)
HEAD_TOKENS = 5  # tokens searched for a level after a leading timestamp
HEAD_CHARS = 2048  # how much of a line (after its timestamp) the text rules look at

_WORDS: dict[str, str] = {}
for _level, _words in {
    "debug": "debug dbg debu trace trc trac verbose fine finer finest debug1 debug2 debug3 "
             "debug4 debug5 trace1 trace2 trace3 trace4 trace5 trace6 trace7 trace8",
    "info": "info inf information informational notice log note detail hint statement "
            "context config default",
    "warn": "warn warning wrn",
    "error": "error err erro eror fatal fata crit critical panic pani emerg emergency alert "
             "severe",
}.items():
    _WORDS.update(dict.fromkeys(_words.split(), _level))
# Any case as a plain first word; the others need a slot, a colon or capitals.
_PLAIN_FIRST = frozenset({"debug", "info", "warn", "warning", "error", "fatal", "panic"})
_LETTERS = {"v": "debug", "d": "debug", "i": "info", "w": "warn", "e": "error", "f": "error",
            "c": "error", "a": "error"}
_SYSLOG = ("error", "error", "error", "error", "warn", "info", "info", "debug")
_MONTHS = {m: i for i, m in enumerate(
    "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_MON = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"

_LEVEL_KEYS = ("level", "severity", "lvl", "levelname", "loglevel", "log_level", "log.level",
               "@l")
_TIME_KEYS = ("time", "ts", "timestamp", "@timestamp", "@t")
_TEXT_KEYS = ("log", "msg", "message")

_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
    r"(?:([Zz])|\s?([+-])(\d\d):?(\d\d)\b|\s(UTC|GMT)\b)?")
_SLASH = re.compile(r"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?")
_CLOCK = re.compile(r"(\d\d):(\d\d):(\d\d)[.,](\d{3,6})(?=[\s\]|])")
_BSD = re.compile(_MON + r" +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))? ")
_SYSLOG_TAG = re.compile(r"(\S+) ([^\s:\[\]]+)(?:\[\d+\])?: ")
_KLOG = re.compile(r"([IWEF])(\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6})\s+\d+ ")
_LOGCAT = re.compile(r"(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{3})\s+\d+\s+\d+ ([VDIWEFA]) ")
_LOGCAT_BRIEF = re.compile(r"([VDIWEFA])/[^(\n]{1,100}\(\s*\d+\): ")
_REDIS = re.compile(r"\d+:[XCSM] (\d\d) " + _MON + r" (\d{4}) (\d\d):(\d\d):(\d\d)\.(\d{3}) "
                    r"([.*#-]) ")
_ACCESS = re.compile(r"\S+ \S+ \S+ \[(\d\d)/" + _MON + r"/(\d{4}):(\d\d):(\d\d):(\d\d) "
                     r"([+-])(\d\d)(\d\d)\] \"[^\"]*\" (\d{3}) ")
_APACHE_TIME = re.compile(r"\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) " + _MON +
                          r" (\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))? (\d{4})\]")
_DMY_TIME = re.compile(r"\[(\d\d)[-/]" + _MON + r"[-/](\d{4})[ :](\d\d):(\d\d):(\d\d)"
                       r"(?: (?:([+-])(\d\d)(\d\d)|(UTC|GMT)|[^\]\s]+))?\]")
_CRI = re.compile(r"\s+(?:stdout|stderr) [PF] ")
_PRI = re.compile(r"<(\d{1,3})>(?:1 )?")
_LOGFMT = re.compile(r"[\w.@-]+=")
_LOGFMT_PAIR = re.compile(r"(?:^|\s)([\w.@-]+)=(?:\"((?:[^\"\\]|\\.)*)\"|(\S*))")
_TOKEN = re.compile(r"\[[^\]]{0,64}\]\S*|\S+")
_WORD_TOKEN = re.compile(r"([A-Za-z]+\d?)(?:\[[^\]]*\])?([:,|]?)(.*)", re.S)
_PHP = re.compile(r"PHP (Fatal error|Parse error|Catchable fatal error|Recoverable fatal error|"
                  r"Warning|Notice|Deprecated|Strict Standards):")
_TRACE_START = re.compile(
    r"Traceback \(most recent call last\):|Exception in thread \"|Caused by: |"
    r"(?:[A-Za-z_$][\w$]*\.)*(?:[\w$]*(?:Exception|Error)|Throwable)(?::\s|:?$)")
_LEVEL_PREFIX = re.compile(r"[A-Za-z]+")

Found = tuple[str | None, datetime | None]
Prefix = tuple[datetime | None, str | None, int]  # (time, level, end of the prefix)


def parse_line(line: str, read_time: datetime, local_tz: tzinfo | None = None) -> tuple[
        str, datetime]:
    """Return ``(level, time)`` of one log line; ``info`` and ``read_time`` when unknown.

    :param read_time: aware time the line was read; the fallback time.
    :param local_tz: zone of zone-less timestamps; ``None`` is the host's local zone.
    """
    level, stamp = _parse(line, read_time, local_tz, depth=0)
    if stamp is None or stamp > read_time + MAX_AHEAD:
        stamp = read_time
    return level or "info", stamp.astimezone(UTC)


def level_of(word: str) -> str | None:
    """The level a level word names (``WARNING`` → ``warn``), or None for any other word."""
    return _WORDS.get(word.lower())


def _parse(line: str, read_time: datetime, tz: tzinfo | None, depth: int) -> Found:
    text = line.lstrip()
    if text[:1] == "{" and depth < 2:
        found = _parse_json(text, read_time, tz, depth)
        if found is not None:
            return found
    return _parse_text(text, read_time, tz, depth)


# --- JSON ------------------------------------------------------------------------------------


def _parse_json(text: str, read_time: datetime, tz: tzinfo | None, depth: int) -> Found | None:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    level = _json_level(obj)
    stamp = _json_time(obj, tz)
    if level is None:
        inner = next((obj[k] for k in _TEXT_KEYS if isinstance(obj.get(k), str)), None)
        if inner is not None:
            inner_level, inner_time = _parse(inner, read_time, tz, depth + 1)
            level, stamp = inner_level, stamp or inner_time
    return level, stamp


def _json_level(obj: dict[str, Any]) -> str | None:
    for key in _LEVEL_KEYS:
        if key in obj:
            level = _field_level(obj[key])
            if level is not None:
                return level
    nested = obj.get("log")
    if isinstance(nested, dict) and "level" in nested:  # ECS: {"log": {"level": "error"}}
        return _field_level(nested["level"])
    if isinstance(obj.get("s"), str) and isinstance(obj.get("t"), dict):  # MongoDB
        return _field_level(obj["s"])
    return None


def _field_level(value: Any) -> str | None:
    """The level in an explicit level field: a word, a letter or a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return _numeric_level(int(text))
        m = _LEVEL_PREFIX.match(text)  # slog's "ERROR+2", "WARN-4"
        if m is None:
            return None
        word = m.group().lower()
        return _LETTERS.get(word) if len(word) == 1 else _WORDS.get(word)
    if isinstance(value, int | float):
        return _numeric_level(value)
    return None


def _numeric_level(value: float) -> str | None:
    """Syslog severities 0–7 (GELF) or bunyan/pino levels 10–60."""
    if isinstance(value, int) and 0 <= value <= 7:
        return _SYSLOG[value]
    if 10 <= value <= 60:
        return "debug" if value < 30 else "info" if value < 40 else "warn" if value < 50 \
            else "error"
    return None


def _json_time(obj: dict[str, Any], tz: tzinfo | None) -> datetime | None:
    for key in _TIME_KEYS:
        if key in obj:
            stamp = _value_time(obj[key], tz)
            if stamp is not None:
                return stamp
    mongo = obj.get("t")
    return _value_time(mongo, tz) if isinstance(mongo, dict) else None


def _value_time(value: Any, tz: tzinfo | None) -> datetime | None:
    """A time from a field value: RFC 3339 text, epoch number, or MongoDB's ``{"$date": …}``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _epoch(value)
    if isinstance(value, dict) and "$date" in value:
        return _value_time(value["$date"], tz)
    if isinstance(value, str):
        text = value.strip()
        m = _ISO.match(text)
        if m is not None:
            return _iso_time(m, tz)
        try:
            return _epoch(float(text))
        except ValueError:
            return None
    return None


def _epoch(value: float) -> datetime | None:
    """Epoch seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude.

    Numbers below 1e8 (1973 in seconds) are more likely durations than times: None.
    """
    for scale in (1, 1e3, 1e6, 1e9):
        if 1e8 * scale <= value < 1e11 * scale:
            try:
                return datetime.fromtimestamp(value / scale, UTC)
            except (ValueError, OverflowError, OSError):
                return None
    return None


# --- text ------------------------------------------------------------------------------------


def _parse_text(text: str, read_time: datetime, tz: tzinfo | None, depth: int) -> Found:
    pri_level = None
    m = _PRI.match(text)
    if m is not None and int(m.group(1)) < 192:
        pri_level = _SYSLOG[int(m.group(1)) & 7]
        text = text[m.end():]
    stamp, level, end = _prefix(text, read_time, tz, depth)
    level = pri_level or level
    head = text[end:end + HEAD_CHARS].lstrip(" \t")
    if level is None and _LOGFMT.match(head):
        level, logfmt_time = _parse_logfmt(head, tz)
        stamp = stamp or logfmt_time
    if level is None:
        level = _head_level(head) if end else _first_word_level(head)
    return level, stamp


def _prefix(text: str, read_time: datetime, tz: tzinfo | None, depth: int) -> tuple[
        datetime | None, str | None, int]:
    """Recognise a leading timestamp (or fixed shape): ``(time, level, end of prefix)``."""
    first = text[:1]
    for matcher in _MATCHERS.get(first if not first.isdigit() else "0", ()):
        found = matcher(text, read_time, tz, depth)
        if found is not None:
            return found
    found = _access(text, read_time, tz, depth)
    return found if found is not None else (None, None, 0)


def _iso_prefix(text: str, read_time: datetime, tz: tzinfo | None, depth: int) -> Prefix | None:
    m = _ISO.match(text)
    if m is None:
        return None
    stamp, end = _iso_time(m, tz), m.end()
    cri = _CRI.match(text, end)
    if cri is not None and depth < 2:  # containerd/CRI-O: "<time> stderr F <line>"
        level, _ = _parse(text[cri.end():], read_time, tz, depth + 1)
        return stamp, level, len(text)
    if m.group(8) or m.group(9) or m.group(12):  # a zone: maybe rsyslog RFC 3339 or
        end = _skip_syslog_tag(text, end)  # journald short-iso, "<time> host prog[1]: "
    return stamp, None, end


def _skip_syslog_tag(text: str, end: int) -> int:
    """Skip ``host prog[pid]: `` after a timestamp, unless those words are levels."""
    tag = _SYSLOG_TAG.match(text, end + 1)
    if tag is None or tag.group(1)[0] in "[<" or level_of(tag.group(1)) or level_of(tag.group(2)):
        return end
    return tag.end()


def _slash_prefix(text: str, read_time: datetime, tz: tzinfo | None, depth: int) -> Prefix | None:
    m = _SLASH.match(text)
    if m is None:
        return None
    return _local((*_ints(m.groups()[:6]), _micros(m.group(7))), tz), None, m.end()


def _clock_prefix(text: str, read_time: datetime, tz: tzinfo | None, depth: int) -> Prefix | None:
    """A bare time of day (logback's default ``10:00:00.123 [main] ERROR …``): today's date."""
    m = _CLOCK.match(text)
    if m is None:
        return None
    today = _local_date(read_time, tz)
    wall = (today.year, today.month, today.day, *_ints(m.groups()[:3]), _micros(m.group(4)))
    stamp = _local(wall, tz)
    if stamp is not None and stamp > read_time + MAX_AHEAD:
        stamp -= timedelta(days=1)  # written just before midnight, read just after
    return stamp, None, m.end()


def _logcat_prefix(text: str, read_time: datetime, tz: tzinfo | None,
                   depth: int) -> Prefix | None:
    m = _LOGCAT.match(text)
    if m is None:
        return None
    month, day, hour, minute, second = _ints(m.groups()[:5])
    stamp = _yearless((month, day, hour, minute, second, _micros(m.group(6))), read_time, tz)
    return stamp, _LETTERS[m.group(7).lower()], m.end()


def _redis_prefix(text: str, read_time: datetime, tz: tzinfo | None, depth: int) -> Prefix | None:
    m = _REDIS.match(text)
    if m is None:
        return None
    day, mon, year, hour, minute, second, ms, mark = m.groups()
    wall = (int(year), _MONTHS[mon], int(day), *_ints((hour, minute, second)), _micros(ms))
    stamp = _local(wall, tz)
    level = {"#": "warn", ".": "debug", "-": "debug"}.get(mark, "info")
    return stamp, level, m.end()


def _bsd_prefix(text: str, read_time: datetime, tz: tzinfo | None, depth: int) -> Prefix | None:
    """``Jun  5 10:00:00 host prog[123]: …`` (RFC 3164 files, journald's short format)."""
    m = _BSD.match(text)
    if m is None:
        return None
    mon, day, hour, minute, second, frac = m.groups()
    stamp = _yearless((_MONTHS[mon], int(day), *_ints((hour, minute, second)), _micros(frac)),
                      read_time, tz)
    tag = _SYSLOG_TAG.match(text, m.end())
    return stamp, None, tag.end() if tag is not None else m.end()


def _klog_prefix(text: str, read_time: datetime, tz: tzinfo | None, depth: int) -> Prefix | None:
    """Kubernetes klog / glog: ``E1205 10:00:00.000000    1234 file.go:12] …``."""
    m = _KLOG.match(text)
    if m is None:
        return None
    letter, *fields = m.groups()
    month, day, hour, minute, second = _ints(fields[:5])
    stamp = _yearless((month, day, hour, minute, second, _micros(fields[5])), read_time, tz)
    return stamp, _LETTERS[letter.lower()], m.end()


def _logcat_brief(text: str, read_time: datetime, tz: tzinfo | None, depth: int) -> Prefix | None:
    m = _LOGCAT_BRIEF.match(text)
    return None if m is None else (None, _LETTERS[m.group(1).lower()], m.end())


def _bracket_prefix(text: str, read_time: datetime, tz: tzinfo | None,
                    depth: int) -> Prefix | None:
    """A bracketed time: gunicorn ``[2026-…]``, Apache ``[Fri Jun 05 …]``, PHP, Django."""
    m = _ISO.match(text, 1)
    if m is not None and text[m.end():m.end() + 1] == "]":
        return _iso_time(m, tz), None, m.end() + 1
    m = _APACHE_TIME.match(text)
    if m is not None:
        mon, day, hour, minute, second, frac, year = m.groups()
        wall = (int(year), _MONTHS[mon], int(day), *_ints((hour, minute, second)),
                _micros(frac))
        return _local(wall, tz), None, m.end()
    m = _DMY_TIME.match(text)
    if m is not None:
        day, mon, year, hour, minute, second, sign, oh, om, utc = m.groups()
        wall = (int(year), _MONTHS[mon], int(day), *_ints((hour, minute, second)), 0)
        zone = UTC if utc else _offset(sign, oh, om) if sign else None
        stamp = _aware(wall, zone) if zone is not None else _local(wall, tz)
        return stamp, None, m.end()
    return None


def _access(text: str, read_time: datetime, tz: tzinfo | None, depth: int) -> Prefix | None:
    """Common/combined access log (nginx, Apache): the status gives the level."""
    if "[" not in text[:300]:
        return None
    m = _ACCESS.match(text)
    if m is None:
        return None
    day, mon, year, hour, minute, second, sign, oh, om, status = m.groups()
    wall = (int(year), _MONTHS[mon], int(day), *_ints((hour, minute, second)), 0)
    stamp = _aware(wall, _offset(sign, oh, om))
    level = "error" if status[0] == "5" else "warn" if status[0] == "4" else "info"
    return stamp, level, len(text)


_Matcher = Callable[[str, datetime, "tzinfo | None", int], "Prefix | None"]


def _matchers() -> dict[str, tuple[_Matcher, ...]]:
    """Prefix matchers by the line's first character (every digit is filed under "0")."""
    table: dict[str, list[_Matcher]] = {}
    for chars, matcher in (
            ("0", _iso_prefix), ("0", _slash_prefix), ("0", _logcat_prefix),
            ("0", _redis_prefix), ("0", _clock_prefix), ("[", _bracket_prefix),
            ("IWEF", _klog_prefix), ("VDIWEFA", _logcat_brief), ("JFMASOND", _bsd_prefix)):
        for char in chars:
            table.setdefault(char, []).append(matcher)
    return {char: tuple(items) for char, items in table.items()}


_MATCHERS = _matchers()


def _parse_logfmt(head: str, tz: tzinfo | None) -> Found:
    level = stamp = None
    for m in _LOGFMT_PAIR.finditer(head):
        key, value = m.group(1).lower(), m.group(2) if m.group(2) is not None else m.group(3)
        if level is None and key in ("level", "lvl", "severity", "loglevel", "log.level"):
            level = _field_level(value)
        elif stamp is None and key in ("time", "ts", "timestamp", "t"):
            stamp = _value_time(value, tz)
    return level, stamp


def _head_level(head: str) -> str | None:
    """The level among the first tokens after a timestamp (see the module docstring)."""
    php = _PHP.match(head)
    if php is not None:
        kind = php.group(1)
        return "warn" if kind == "Warning" else "info" if kind in (
            "Notice", "Deprecated", "Strict Standards") else "error"
    words = 0
    for index, m in enumerate(_TOKEN.finditer(head)):
        if index >= HEAD_TOKENS:
            break
        token = m.group()
        if token[0] in "[<":
            level = _slot_level(token)
        elif token[0].isalpha():
            level = _word_level(token, first=words == 0)
            words += 1
        else:
            continue
        if level is not None:
            return level
    return None


def _first_word_level(text: str) -> str | None:
    """A line without a timestamp: leading ``[…]`` tokens, then the first word only."""
    for index, m in enumerate(_TOKEN.finditer(text)):
        token = m.group()
        if token[0] in "[<" and index < 3:
            level = _slot_level(token)
            if level is not None:
                return level
            continue
        level = _word_level(token, first=True) if token[0].isalpha() else None
        if level is None and _TRACE_START.match(text, m.start()):
            level = "error"
        return level
    return None


def _slot_level(token: str) -> str | None:
    """``[ERROR]``, ``[ warn ]``, ``[core:error]`` or ``<err>``: any level word, any case."""
    close = "]" if token[0] == "[" else ">"
    end = token.find(close)
    if end < 0:
        return None
    inner = token[1:end].rsplit(":", 1)[-1].strip()
    if token[0] == "<" and inner.isdigit():
        return _SYSLOG[int(inner)] if int(inner) < 8 else None
    return _WORDS.get(inner.lower())


def _word_level(token: str, first: bool) -> str | None:
    """A bare word is a level in capitals anywhere, or as the first word (see module doc)."""
    m = _WORD_TOKEN.match(token)
    if m is None:
        return None
    word, sep, rest = m.groups()
    if rest and sep != ":":
        return None  # "error.log", "Error's"
    level = _WORDS.get(word.lower())
    if level is None or len(word) < 3:
        return None
    if word.isupper() or (first and (sep == ":" or word.lower() in _PLAIN_FIRST)):
        return level
    return None


# --- time helpers ----------------------------------------------------------------------------


def _ints(groups: Any) -> tuple[int, ...]:
    return tuple(int(g) for g in groups)


def _micros(frac: str | None) -> int:
    return int(frac[:6].ljust(6, "0")) if frac else 0


def _offset(sign: str, hours: str, minutes: str) -> tzinfo | None:
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta >= timedelta(hours=24):
        return None
    return timezone(-delta if sign == "-" else delta)


def _aware(wall: Sequence[int], zone: tzinfo | None) -> datetime | None:
    """``wall`` is (year, month, day, hour, minute, second, microsecond) in ``zone``."""
    if zone is None:
        return None
    try:
        return datetime(*_seven(wall), tzinfo=zone)
    except (ValueError, OverflowError):
        return None


def _local(wall: Sequence[int], tz: tzinfo | None) -> datetime | None:
    """A zone-less wall time read in ``tz`` (None: the host's local zone)."""
    try:
        naive = datetime(*_seven(wall))
        return naive.astimezone() if tz is None else naive.replace(tzinfo=tz)
    except (ValueError, OverflowError, OSError):
        return None


def _seven(wall: Sequence[int]) -> tuple[int, int, int, int, int, int, int]:
    year, month, day, hour, minute, second, micro = wall
    return year, month, day, hour, minute, second, micro


def _local_date(read_time: datetime, tz: tzinfo | None) -> date:
    return (read_time.astimezone() if tz is None else read_time.astimezone(tz)).date()


def _yearless(wall: Sequence[int], read_time: datetime, tz: tzinfo | None) -> datetime | None:
    """(month, day, hour, minute, second, µs): the year that puts it at most a day after the
    read time."""
    year = _local_date(read_time, tz).year
    stamp = _local((year, *wall), tz)
    if stamp is None or stamp > read_time + timedelta(days=1):
        stamp = _local((year - 1, *wall), tz)
    return stamp


def _iso_time(m: re.Match[str], tz: tzinfo | None) -> datetime | None:
    year, month, day, hour, minute, second, frac, z, sign, oh, om, utc = m.groups()
    fields = (*_ints((year, month, day, hour, minute, second)), _micros(frac))
    if z or utc:
        return _aware(fields, UTC)
    if sign:
        return _aware(fields, _offset(sign, oh, om))
    return _local(fields, tz)
