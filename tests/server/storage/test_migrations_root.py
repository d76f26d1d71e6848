"""Where the migrations are found: the source tree, else the installed data files."""

from __future__ import annotations

from pathlib import Path

from miniobserv.server.storage.migrate import SCRIPT_LOCATION, migrations_root


def make_migrations(root: Path) -> Path:
    (root / "alembic").mkdir(parents=True)
    (root / "alembic" / "env.py").write_text("")
    return root


def test_the_source_tree_wins_when_it_has_the_migrations(tmp_path: Path) -> None:
    source = make_migrations(tmp_path / "src")
    make_migrations(tmp_path / "venv" / "share" / "miniobserv")
    assert migrations_root(source, tmp_path / "venv") == source


def test_a_regular_install_uses_the_data_files(tmp_path: Path) -> None:
    installed = make_migrations(tmp_path / "venv" / "share" / "miniobserv")
    assert migrations_root(tmp_path / "site-packages", tmp_path / "venv") == installed


def test_with_neither_the_source_tree_is_named_in_the_error(tmp_path: Path) -> None:
    assert migrations_root(tmp_path / "src", tmp_path / "venv") == tmp_path / "src"


def test_this_checkout_runs_its_own_migrations() -> None:
    assert (SCRIPT_LOCATION / "env.py").is_file()
    assert SCRIPT_LOCATION == Path(__file__).resolve().parents[3] / "alembic"
