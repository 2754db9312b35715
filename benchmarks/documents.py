"""Generated tables inside hand-written documents.

A document marks where a table goes with two lines, a start marker that names the command
which writes the table and an end marker; the command rewrites what lies between them and
leaves the rest of the document as it is.
"""

from pathlib import Path


def rewrite_block(path, start_marker, end_marker, lines):
    """Replace the lines between ``start_marker`` and ``end_marker`` in ``path`` with ``lines``."""
    text = Path(path).read_text()
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise SystemExit(f"error: {path} has no '{start_marker}' ... '{end_marker}' block; add both lines where the table goes")
    body = "\n".join(lines)
    Path(path).write_text(f"{text[:start]}{start_marker}\n{body}\n{text[end:]}")
