"""Files written whole: a failure halfway leaves the old file and no leftovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.files import written_whole


def test_a_write_that_fails_halfway_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "v2.3.csv"
    target.write_text("the old recording\n", encoding="utf-8")
    with pytest.raises(OSError, match="No space left"), written_whole(target) as handle:
        handle.write("half of the new")
        raise OSError(28, "No space left on device")
    assert target.read_text(encoding="utf-8") == "the old recording\n"
    assert [p.name for p in tmp_path.iterdir()] == ["v2.3.csv"]


def test_a_complete_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "v2.3.csv"
    target.write_text("old", encoding="utf-8")
    with written_whole(target) as handle:
        handle.write("new\r\n")
    assert target.read_bytes() == b"new\r\n"   # written as given: CSV keeps its line ends
    assert [p.name for p in tmp_path.iterdir()] == ["v2.3.csv"]


def test_a_symlink_has_its_target_replaced_with_the_targets_mode(tmp_path: Path) -> None:
    real = tmp_path / "real.html"
    real.write_text("old", encoding="utf-8")
    real.chmod(0o640)
    link = tmp_path / "latest.html"
    link.symlink_to(real)
    with written_whole(link) as handle:
        handle.write("new")
    assert link.is_symlink() and real.read_text(encoding="utf-8") == "new"
    assert real.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.html", "real.html"]


def test_a_new_file_gets_the_modes_a_plain_open_would_give(tmp_path: Path) -> None:
    plain, whole = tmp_path / "plain", tmp_path / "whole"
    plain.write_text("x", encoding="utf-8")
    with written_whole(whole) as handle:
        handle.write("x")
    assert whole.stat().st_mode == plain.stat().st_mode


def test_what_is_no_regular_file_is_written_directly(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    with written_whole(fifo) as handle:
        handle.write("through the pipe")
    reader.join(timeout=10)
    assert received == ["through the pipe"] and fifo.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_stream_path_is_written_directly_even_when_it_resolves_to_a_file(
        tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "out.txt"
    out.write_text("earlier line\n", encoding="utf-8")
    program = ("from monitor.files import written_whole\n"
               "with written_whole('/dev/stdout') as handle:\n"
               "    handle.write('report\\n')\n")
    with open(out, "a", encoding="utf-8") as appended:   # the shell's `>> out.txt`
        subprocess.run([sys.executable, "-c", program], stdout=appended, check=True)
    assert out.read_text(encoding="utf-8") == "earlier line\nreport\n"
    piped = subprocess.run([sys.executable, "-c", program], capture_output=True, check=True)
    assert piped.stdout == b"report\n"
