"""Temp-directory entries named after a gunicorn master, and the removal of stale ones."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from miniobserv.server.masterfiles import master_path, process_start, remove_stale

PREFIX = "miniobserv-test-"


@pytest.fixture
def tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_process_start_is_the_kernels_start_time() -> None:
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    assert process_start(os.getpid()) == stat.rpartition(")")[2].split()[19]
    assert process_start(os.getpid()).isdigit()
    assert process_start(dead_pid()) == "0"


def test_master_path_names_pid_and_start(tmp_dir: Path) -> None:
    pid = os.getpid()
    assert master_path(PREFIX, pid) == tmp_dir / f"{PREFIX}{pid}-{process_start(pid)}"


def test_remove_stale_keeps_live_masters_and_removes_gone_ones(tmp_dir: Path) -> None:
    live = master_path(PREFIX, os.getpid())
    live.mkdir()
    (live / "counter_1.db").write_bytes(b"x")
    gone = tmp_dir / f"{PREFIX}{dead_pid()}-12345"
    gone.mkdir()
    (gone / "counter_2.db").write_bytes(b"x")
    reused = tmp_dir / f"{PREFIX}{os.getpid()}-1"  # this pid, but an earlier process's start
    reused.touch()
    other = [tmp_dir / f"{PREFIX}notes", tmp_dir / f"{PREFIX}12-x", tmp_dir / "unrelated-1-2"]
    for path in other:
        path.touch()

    assert sorted(remove_stale(PREFIX)) == sorted([gone, reused])
    assert sorted(tmp_dir.iterdir()) == sorted([live, *other])
    assert (live / "counter_1.db").exists()
    assert remove_stale(PREFIX) == []


def test_remove_stale_leaves_a_symlinked_directorys_target(tmp_dir: Path,
                                                            tmp_path_factory: pytest.TempPathFactory
                                                            ) -> None:
    target = tmp_path_factory.mktemp("target")
    (target / "keep").touch()
    link = tmp_dir / f"{PREFIX}{dead_pid()}-7"
    link.symlink_to(target, target_is_directory=True)
    assert remove_stale(PREFIX) == [link]
    assert (target / "keep").exists()
