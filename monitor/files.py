"""Files written whole: through a file beside the target, renamed over it once complete,
so a failure halfway (a full disk, Ctrl-C) leaves the target as it was."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def written_whole(path: str | Path) -> Iterator[TextIO]:
    """A text handle whose contents replace `path` when the block ends without error.

    A symlink's target is what gets replaced, keeping the file's permissions; a path that
    is no regular file (`/dev/stdout`, a pipe) is written directly, as there is nothing
    to keep whole.

    >>> target = Path(tempfile.mkdtemp()) / "out.csv"
    >>> with written_whole(target) as handle:
    ...     _ = handle.write("a,b\\n")
    >>> target.read_text()
    'a,b\\n'
    """
    target = Path(path).resolve()
    if target.exists() and not target.is_file():
        with open(target, "w", newline="", encoding="utf-8") as handle:
            yield handle
        return
    descriptor, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                           suffix=".partial")
    try:
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
            yield handle
        if target.exists():
            shutil.copymode(target, partial)
        else:
            os.chmod(partial, 0o666 & ~_umask())
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask (read by setting it, so set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
