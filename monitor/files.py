"""Files written whole: through a file beside the target, renamed over it once complete,
so a failure halfway (a full disk, Ctrl-C) leaves the target as it was."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

# Paths that stand for a stream, whatever they resolve to (`--out /dev/stdout` appended to
# a file by the shell must not replace that file).
_STREAMS = ("/dev/", "/proc/")


@contextmanager
def written_whole(path: str | Path) -> Iterator[TextIO]:
    """A text handle whose contents replace `path` when the block ends without error.

    A symlink's target is what gets replaced, keeping the file's permissions; a new file
    gets the permissions a plain open would give. A stream (`/dev/stdout`, a pipe) is
    written directly, as there is nothing to keep whole.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.csv"
    >>> with written_whole(target) as handle:
    ...     _ = handle.write("a,b\\n")
    >>> target.read_text()
    'a,b\\n'
    """
    given = os.fspath(path)
    if given.startswith(_STREAMS) or (os.path.exists(given)
                                      and not stat.S_ISREG(os.stat(given).st_mode)):
        # Appended: opening /dev/stdout anew would truncate a file the shell appends to.
        with open(given, "a", newline="", encoding="utf-8") as handle:
            yield handle
        return
    target = Path(os.path.realpath(given))
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    try:
        # Created as open() would create the target: the umask decides its mode.
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
            yield handle
        if target.exists():
            shutil.copymode(target, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
