"""Shared fixtures: small review/meta files written on the fly, and the real Amazon data folder."""

import gzip
import json
import os
from pathlib import Path

import pytest


def _encode_line(rec) -> bytes:
    if isinstance(rec, bytes):
        return rec
    if isinstance(rec, str):
        return rec.encode("utf-8")
    return json.dumps(rec, ensure_ascii=False).encode("utf-8")


@pytest.fixture
def write_records(tmp_path):
    """write_records(name, records, gz=None) -> Path.

    Each record is a dict (written as JSON), a str or bytes (written as is), one a
    line. The file is gzip-compressed when ``gz`` is true, or, by default, when
    the name ends with ``.gz``.
    """

    def write(name, records, gz=None):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(_encode_line(r) + b"\n" for r in records)
        if gz is None:
            gz = name.endswith(".gz")
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return write


@pytest.fixture(scope="session")
def shared_data():
    """The real Amazon data folder (../shared/data), or skip."""
    env = os.environ.get("RECBOLE_MM_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not root.is_dir():
        pytest.skip(f"real Amazon data not found at {root} (set RECBOLE_MM_SHARED_DATA to its folder)")
    return root


@pytest.fixture(scope="session")
def shared_file(shared_data):
    """``shared_file("folder/file")``: a file of the real Amazon data, or skip naming the missing file."""

    def find(relative: str) -> Path:
        path = shared_data / relative
        if not path.exists():
            pytest.skip(f"{path} not found")
        return path

    return find
