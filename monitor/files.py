"""Files written whole: through a file beside the target, renamed over it once complete,
so a failure halfway (a full disk, Ctrl-C) leaves the target as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def written_whole(path: str | Path) -> Iterator[TextIO]:
    """A text handle whose contents replace `path` when the block ends without error.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.csv"
    >>> with written_whole(target) as handle:
    ...     _ = handle.write("a,b\\n")
    >>> target.read_text()
    'a,b\\n'
    """
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with open(partial, "w", newline="", encoding="utf-8") as handle:
            yield handle
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
