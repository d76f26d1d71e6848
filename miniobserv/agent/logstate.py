"""The log tailer's state file: the committed read position of every followed file.

``<LOG_STATE_DIR>/logtail.json`` holds the patterns the tailer followed and, per file, its
identity ``(st_dev, st_ino)``, its path, the offset up to which every line was shipped and a
fingerprint of its first bytes, and the chunks in flight: polled and handed to the sender but
not yet settled by the server, each with the byte ranges it covers and its read time, so a
restart re-reads exactly those bytes and re-sends a byte-identical chunk under the same
``batch_id`` before reading further. It is replaced atomically (temporary file, ``fsync``,
``os.replace``), so a crash leaves the old state or the new one, never a mix. A file that
cannot be read or parsed counts as no state: the tailer then starts afresh (logged).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "logtail.json"
STATE_VERSION = 1

Ident = tuple[int, int]  # (st_dev, st_ino)
Range = tuple[int, int, str, int, int]  # (st_dev, st_ino, fingerprint, start, end) of a chunk


@dataclass(frozen=True)
class FilePosition:
    """A saved read position: everything before ``offset`` of that file has been shipped."""

    path: str
    dev: int
    ino: int
    offset: int
    fp_len: int = 0
    fp: str = ""

    @property
    def ident(self) -> Ident:
        return self.dev, self.ino


@dataclass(frozen=True)
class InFlight:
    """A chunk handed to the sender and not yet settled: what a restart re-reads first.

    ``ranges`` are the chunk's own (its ``batch_id`` derives from them), in reading order;
    ``heads`` the fingerprinted length of each file; ``ends`` where reading stopped in each
    (for a file closed by the chunk, whose range ends at -1, its size then); ``read_time``
    (ISO 8601) the time of its lines without a timestamp of their own. ``seq`` is the poll of
    this run that made it; 0 for a chunk left by the previous run (not saved).
    """

    ranges: tuple[Range, ...]
    heads: tuple[int, ...]
    ends: tuple[int, ...]
    read_time: str
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"ranges": [list(r) for r in self.ranges], "heads": list(self.heads),
                "ends": list(self.ends), "read_time": self.read_time}


@dataclass(frozen=True)
class State:
    """What the state file holds."""

    patterns: frozenset[str] = frozenset()
    positions: dict[Ident, FilePosition] = field(default_factory=dict)
    inflight: tuple[InFlight, ...] = ()


def save_state(path: Path, patterns: Iterable[str], positions: Iterable[FilePosition],
               inflight: Iterable[InFlight] = ()) -> None:
    """Replace the state file at ``path`` atomically; raises OSError when it cannot."""
    state = {"version": STATE_VERSION, "patterns": list(patterns),
             "files": [asdict(p) for p in positions],
             "inflight": [chunk.to_json() for chunk in inflight]}
    write_atomically(path, json.dumps(state, indent=1))


def load_state(path: Path) -> State:
    """Saved patterns, positions and chunks in flight; an unreadable state file counts as
    none, malformed chunks in flight as no chunk in flight (logged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return State()
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable log position file %s: %s", path, err)
        return State()
    try:
        positions = [_position(item) for item in data["files"]]
        patterns = frozenset(str(p) for p in data["patterns"])
    except (KeyError, TypeError, ValueError) as err:
        log.warning("ignoring malformed log position file %s: %s", path, err)
        return State()
    try:
        inflight = tuple(_inflight(item) for item in data.get("inflight", ()))
    except (KeyError, TypeError, ValueError) as err:
        log.warning("ignoring the malformed log chunks in flight in %s: %s", path, err)
        inflight = ()
    return State(patterns, {p.ident: p for p in positions}, inflight)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, ``fsync`` it, rename it over."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _position(item: Any) -> FilePosition:
    if not isinstance(item, dict):
        raise TypeError("file entry is not an object")
    pos = FilePosition(str(item["path"]), int(item["dev"]), int(item["ino"]), int(item["offset"]),
                       int(item.get("fp_len", 0)), str(item.get("fp", "")))
    if pos.offset < 0 or pos.fp_len < 0:
        raise ValueError("negative offset")
    return pos


def _inflight(item: Any) -> InFlight:
    ranges = tuple((int(d), int(i), str(fp), int(a), int(b)) for d, i, fp, a, b in item["ranges"])
    heads = tuple(int(n) for n in item["heads"])
    ends = tuple(int(n) for n in item["ends"])
    if not ranges or len(heads) != len(ranges) or len(ends) != len(ranges):
        raise ValueError("ranges, heads and ends differ in length")
    if any(a < 0 or b < -1 for _, _, _, a, b in ranges) or min(heads + ends) < 0:
        raise ValueError("negative offset")
    return InFlight(ranges, heads, ends, str(item["read_time"]))
