"""Files written whole or not at all: every result, record, table and checkpoint goes through
:func:`replace_atomically`, so a killed process never leaves half a file behind."""

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def replace_atomically(path):
    """Yield a temporary path beside ``path`` to write; on success it replaces ``path`` (one
    rename), on an error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path, text):
    with replace_atomically(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
