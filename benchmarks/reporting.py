"""Shared output of the benchmark scripts: the report as JSON on stdout and, when asked, in a file."""

from __future__ import annotations

import json
from pathlib import Path


def emit(report, out: Path | None = None) -> str:
    """Print ``report`` as indented JSON; also write it to ``out`` (folders created) when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    return text
