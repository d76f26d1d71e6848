"""Multiline assembly: which lines join the entry before them (``LOG_MULTILINE``).

Pure string logic, apart from the file tracking of :mod:`miniobserv.agent.logtail`, so the
rules can be tested on plain strings. Indented lines and stack-trace lines
(``Traceback (most recent call last):``, ``Caused by:``, ``java.lang.X: …``, the final line of
a Python traceback) join the entry before them, up to 64 KiB of UTF-8; a line that would pass
that starts an entry of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from miniobserv.model import MAX_MESSAGE_BYTES

TRACEBACK = "Traceback (most recent call last):"
_TRACE_HEADER = re.compile(
    r"Caused by: |Suppressed: |Traceback \(most recent call last\):|"
    r"During handling of the above exception|The above exception was the direct cause")
_EXCEPTION_LINE = re.compile(
    r"(?:[A-Za-z_$][\w$]*\.)*[A-Za-z_$][\w$]*(?:Exception|Error|Throwable)(?::|$)")
_TRACEBACK_END = re.compile(r"[A-Za-z_][\w.]*(?::|$)")  # "mod.Exc: msg" or "Exc"


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


@dataclass(frozen=True)
class Entry:
    """One assembled entry: its text (lines joined by ``\\n``) and its first line."""

    text: str
    first: str


@dataclass
class Assembler:
    """The entry being assembled: its lines, where it started (a byte offset), its size."""

    lines: list[str] = field(default_factory=list)
    start: int = 0
    size: int = 0
    in_traceback: bool = False

    def __bool__(self) -> bool:
        return bool(self.lines)

    def add(self, text: str, start: int = 0) -> Entry | None:
        """Add one non-blank line found at offset ``start``; returns the entry it completed
        (the one held before, when ``text`` starts a new one), else None."""
        size = utf8_len(text)
        if self.lines and self.continues(text) and self.size + 1 + size <= MAX_MESSAGE_BYTES:
            self.lines.append(text)
            self.size += 1 + size
            return None
        done = self.take()
        self.lines, self.size, self.start = [text], size, start
        self.in_traceback = text.startswith(TRACEBACK)
        return done

    def take(self) -> Entry | None:
        """The held entry, ended now (the next entry started, or the file went idle)."""
        if not self.lines:
            return None
        lines, self.lines = self.lines, []
        self.size, self.in_traceback = 0, False
        return Entry("\n".join(lines), lines[0])

    def reset(self) -> None:
        self.lines.clear()
        self.start = self.size = 0
        self.in_traceback = False

    def continues(self, text: str) -> bool:
        """Does ``text`` continue the held entry? Indented lines, stack-trace headers and
        exception lines do; so does the last line of a Python traceback (``KeyError: 'x'``)."""
        if text[0] in " \t":
            return True
        if _TRACE_HEADER.match(text):
            self.in_traceback = self.in_traceback or text.startswith(TRACEBACK)
            return True
        if _EXCEPTION_LINE.match(text) or (self.in_traceback and _TRACEBACK_END.match(text)):
            self.in_traceback = False
            return True
        return False


def assemble(lines: list[str]) -> list[str]:
    """The entries of ``lines`` (blank lines skipped), the last one ended at the end."""
    assembler, out = Assembler(), []
    for line in lines:
        if line and not line.isspace() and (done := assembler.add(line)) is not None:
            out.append(done.text)
    if (last := assembler.take()) is not None:
        out.append(last.text)
    return out
