"""The log tailer's state file: the committed read position of every followed file.

``<LOG_STATE_DIR>/logtail.json`` holds the patterns the tailer followed and, per file, its
identity ``(st_dev, st_ino)``, its path, the offset up to which every line was shipped and a
fingerprint of its first bytes. It is replaced atomically (temporary file, ``fsync``,
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "logtail.json"
STATE_VERSION = 1

Ident = tuple[int, int]  # (st_dev, st_ino)


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


def save_state(path: Path, patterns: Iterable[str], positions: Iterable[FilePosition]) -> None:
    """Replace the state file at ``path`` atomically; raises OSError when it cannot."""
    state = {"version": STATE_VERSION, "patterns": list(patterns),
             "files": [asdict(p) for p in positions]}
    write_atomically(path, json.dumps(state, indent=1))


def load_state(path: Path) -> tuple[frozenset[str], dict[Ident, FilePosition]]:
    """Saved patterns and positions; an unreadable state file counts as none (logged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return frozenset(), {}
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable log position file %s: %s", path, err)
        return frozenset(), {}
    try:
        positions = [_position(item) for item in data["files"]]
        patterns = frozenset(str(p) for p in data["patterns"])
    except (KeyError, TypeError, ValueError) as err:
        log.warning("ignoring malformed log position file %s: %s", path, err)
        return frozenset(), {}
    return patterns, {p.ident: p for p in positions}


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
