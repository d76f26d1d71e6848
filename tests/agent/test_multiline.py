"""Multiline rules on plain strings (no files): what joins the entry before it."""

from __future__ import annotations

from miniobserv.agent.multiline import Assembler, assemble
from miniobserv.model import MAX_MESSAGE_BYTES


def test_a_python_traceback_is_one_entry_up_to_its_final_line():
    lines = ["ERROR boom", "Traceback (most recent call last):", '  File "x.py", line 1',
             "KeyError: 'x'", "INFO next"]
    assert assemble(lines) == ["\n".join(lines[:4]), "INFO next"]


def test_the_final_line_joins_only_inside_a_traceback():
    assert assemble(["INFO a", "StopIteration"]) == ["INFO a", "StopIteration"]
    trace = ["Traceback (most recent call last):", '  File "x.py", line 1', "StopIteration"]
    assert assemble(trace) == ["\n".join(trace)]


def test_java_exception_and_caused_by_lines_join():
    lines = ["ERROR failed", "java.lang.IllegalStateException: bad", "\tat A.b(A.java:1)",
             "Caused by: java.io.IOException: disk"]
    assert assemble(lines) == ["\n".join(lines)]


def test_unindented_lines_are_entries_of_their_own_and_blank_lines_are_skipped():
    assert assemble(["one", "", "   ", "two"]) == ["one", "two"]


def test_an_entry_stops_growing_at_64kib_exactly():
    first = "x" * (MAX_MESSAGE_BYTES - 1 - 3)
    assert assemble([first, " ab"]) == [first + "\n ab"]  # exactly 64 KiB: joined
    assert assemble([first, " abc"]) == [first, " abc"]  # one byte over: its own entry


def test_the_entry_start_is_the_offset_of_its_first_line():
    assembler = Assembler()
    assert assembler.add("head", 10) is None
    assert assembler.add("  more", 15) is None
    done = assembler.add("next", 22)
    assert done is not None and done.first == "head" and assembler.start == 22
