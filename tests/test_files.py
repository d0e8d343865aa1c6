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
