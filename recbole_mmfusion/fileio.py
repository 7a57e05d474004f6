"""Small atomic file writes (temp file in the same folder + rename), so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def replace_from_temp(path, write) -> Path:
    """Call ``write(binary file)`` on a temp file beside ``path``, flush it to disk, then rename it to ``path``;
    on any failure the temp file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path, text: str) -> None:
    replace_from_temp(path, lambda out: out.write(text.encode("utf-8")))


def write_json_atomic(path, payload) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
