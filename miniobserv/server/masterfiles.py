"""Paths in the temp directory that belong to one gunicorn master, and their clean-up.

The workers of a master share two kinds of entry in the temp directory: the prometheus_client
multiprocess directory (``telemetry``) and the marker of the first worker that failed to load
the app (``wsgi``, only without the shipped config file). Each is named ``<prefix><pid>-<start>`` after the master: its pid and the
kernel's start time of that pid, so a restarted master, or a new process that got the same
pid, never reuses an old entry. Nothing runs when a master exits, so a worker that creates an
entry first removes those of masters that are gone (only entries this user owns).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks after boot); "0" if it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    fields = stat.rpartition(")")[2].split()  # the name, in parentheses, may hold spaces
    return fields[19] if len(fields) > 19 else "0"


def master_path(prefix: str, master_pid: int) -> Path:
    """``<tmp>/<prefix><pid>-<start>`` for the live process ``master_pid``."""
    return Path(tempfile.gettempdir()) / f"{prefix}{master_pid}-{process_start(master_pid)}"


def remove_stale(prefix: str) -> list[Path]:
    """Remove this user's ``<tmp>/<prefix><pid>-<start>`` entries whose process is gone."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        pid, _, start = path.name[len(prefix):].partition("-")
        if not pid.isdigit() or not start.isdigit() or process_start(int(pid)) == start:
            continue
        try:
            if path.lstat().st_uid != os.getuid():
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:  # another worker removed it first
            continue
        except OSError as err:
            log.debug("cannot remove %s: %s", path, err)
            continue
        removed.append(path)
    return removed
