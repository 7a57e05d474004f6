"""Streaming readers for Amazon review files.

Files are opened by content, not by name: gzip is recognised by its magic bytes
(``1f 8b``) and Parquet by ``PAR1``; anything else is read as text with one JSON
object a line (``.jsonl``, ``.json``, ``.jsonl.gz``, ``.json.gz``). Lines are read
as bytes and decoded here with strict UTF-8, so a bad byte costs one record, not
the file. Lines that are not JSON but are Python dict literals (the 2014 meta
files use single quotes) are read with :func:`ast.literal_eval`.

Review records of three schemas are recognised record by record and normalised
to :class:`Review`:

* Amazon 2023: ``user_id``, ``parent_asin`` (else ``asin``), ``rating``,
  ``title``, ``text``, ``timestamp`` (else ``sort_timestamp``) in milliseconds;
* Amazon 2018 / 2014: ``reviewerID``, ``asin``, ``overall``, ``summary``,
  ``reviewText``, ``unixReviewTime`` in seconds, else ``reviewTime``
  (``"09 1, 2016"``, read as a UTC date).

Nothing is kept between records: memory does not grow with the file.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import os
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from .fields import MAX_MS, as_text, checked_id, json_type, parse_rating, review_timestamp
from .issues import ConversionError, InputIssues

PathLike = Union[str, "os.PathLike[str]"]

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
PARQUET_BATCH_ROWS = 8192
_PROGRESS_EVERY = 2048  # lines between two progress-bar updates


class Review(NamedTuple):
    """One review, whatever the schema of its file."""

    user: str
    item: str
    rating: Optional[float]  # None: implicit feedback
    timestamp: int  # milliseconds since the epoch (UTC)
    title: str
    text: str
    file: str
    line: int


# --------------------------------------------------------------------------- files


def check_inputs(paths: Union[PathLike, Sequence[PathLike], None], what: str) -> List[Path]:
    """Return ``paths`` as a list of existing files, or raise ConversionError."""
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise ConversionError(f"{what} file not found: {path}")
        if not path.is_file():
            raise ConversionError(f"{what} path is not a file: {path}")
        out.append(path)
    return out


def _unreadable(path: PathLike, e: OSError) -> ConversionError:
    return ConversionError(f"cannot read {path}: {e.strerror or e}")


def _open_binary(path: PathLike):
    """``open(path, "rb")``, raising :class:`ConversionError` when the file cannot be opened."""
    try:
        return open(path, "rb")
    except OSError as e:
        raise _unreadable(path, e) from None


def detect_format(path: PathLike) -> str:
    """``"gzip"``, ``"parquet"`` or ``"text"``, from the first bytes of the file."""
    with _open_binary(path) as f:
        try:
            head = f.read(4)
        except OSError as e:
            raise _unreadable(path, e) from None
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head == PARQUET_MAGIC:
        return "parquet"
    return "text"


def _progress_bar(enabled: bool, total: int, desc: str, unit: str = "B"):
    from tqdm.auto import tqdm

    scale = unit == "B"
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
                file=sys.stderr, disable=not enabled, dynamic_ncols=True, leave=False)


@contextmanager
def open_lines(path: PathLike):
    """Open a text or gzip file; yield ``(binary line iterator, raw file)``.

    ``raw.tell()`` is the position in the file on disk (for gzip: in the
    compressed stream), which is what progress is measured in.
    """
    raw = _open_binary(path)
    try:
        if raw.read(2) == GZIP_MAGIC:
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz, raw
        else:
            raw.seek(0)
            yield raw, raw
    finally:
        raw.close()


def has_records(path: PathLike) -> bool:
    """Whether a file holds at least one non-blank line (Parquet: one row); reads only its start."""
    path = Path(path)
    if detect_format(path) == "parquet":
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows > 0
        except Exception:  # unreadable: let the reader report it
            return True
    try:
        with open_lines(path) as (stream, _):
            return any(line.strip() for line in stream)
    except (EOFError, OSError, zlib.error):
        return True  # damaged: the reader reports where


def _decode_line(raw_line: bytes, name: str, lineno: int, issues: InputIssues):
    try:
        text = raw_line.decode("utf-8")
    except UnicodeDecodeError as e:
        issues.bad("bad_encoding", name, lineno, "line",
                   f"invalid UTF-8 byte 0x{raw_line[e.start]:02x} at column {e.start + 1}")
        return None
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    return text


def parse_line(text: str):
    """Parse one line: JSON first, then a Python dict literal. Raises ValueError."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        err = e
    s = text.strip()
    if s[:1] == "{":
        try:
            return ast.literal_eval(s)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    if isinstance(err, json.JSONDecodeError):
        raise ValueError(f"{err.msg} at column {err.colno}")
    raise ValueError(str(err) or type(err).__name__)


def _iter_text_objects(path: Path, issues: InputIssues, progress: bool) -> Iterator[Tuple[int, dict]]:
    name = str(path)
    n_records = 0
    try:
        size = path.stat().st_size
    except OSError as e:
        raise _unreadable(path, e) from None
    with _progress_bar(progress, size, path.name) as bar, open_lines(path) as (stream, raw):
        lineno = 0
        last_pos = 0
        try:
            for lineno, raw_line in enumerate(stream, 1):
                if progress and lineno % _PROGRESS_EVERY == 0:
                    pos = raw.tell()
                    bar.update(pos - last_pos)
                    last_pos = pos
                if not raw_line.strip():
                    continue
                n_records += 1
                issues.records_read += 1
                text = _decode_line(raw_line, name, lineno, issues)
                if text is None:
                    continue
                try:
                    obj = parse_line(text)
                except ValueError as e:
                    issues.bad("malformed_json", name, lineno, "json", str(e))
                    continue
                if not isinstance(obj, dict):
                    issues.bad("not_object", name, lineno, "record",
                               f"expected a JSON object, got {json_type(obj)}")
                    continue
                yield lineno, obj
        except (EOFError, OSError, zlib.error) as e:
            raise ConversionError(f"{name}: unreadable after line {lineno}: {e}") from None
        if progress:
            bar.update(size - last_pos)
    if n_records == 0:
        raise ConversionError(f"input file has no records: {name}")


def _iter_parquet_objects(path: Path, issues: InputIssues, progress: bool,
                          columns: Optional[Sequence[str]] = None) -> Iterator[Tuple[int, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise ConversionError(f"reading Parquet needs pyarrow (pip install pyarrow): {path}") from None
    name = str(path)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid/OSError types
        raise ConversionError(f"cannot read Parquet file {name}: {e}") from None
    n_rows = pf.metadata.num_rows
    if n_rows == 0:
        raise ConversionError(f"input file has no records: {name}")
    if columns is not None:
        present = set(pf.schema_arrow.names)
        columns = [c for c in columns if c in present] or None
    row = 0
    with _progress_bar(progress, n_rows, path.name, unit="rows") as bar:
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
                for obj in batch.to_pylist():
                    row += 1
                    issues.records_read += 1
                    yield row, obj
                bar.update(batch.num_rows)
        except (OSError, ValueError) as e:
            raise ConversionError(f"{name}: unreadable after row {row}: {e}") from None


def iter_objects(path: PathLike, issues: InputIssues, *, progress: bool = False,
                 columns: Optional[Sequence[str]] = None) -> Iterator[Tuple[int, dict]]:
    """Yield ``(line, dict)`` for every record of one file.

    Bad records are reported to ``issues`` and skipped; blank lines are ignored.
    ``line`` is the 1-based line number (the row number for Parquet). A file
    without any record raises :class:`ConversionError`. ``columns`` only
    narrows what is read from Parquet files.
    """
    path = Path(path)
    if detect_format(path) == "parquet":
        yield from _iter_parquet_objects(path, issues, progress, columns)
    else:
        yield from _iter_text_objects(path, issues, progress)


# --------------------------------------------------------------------------- reviews

USER_KEYS = ("user_id", "reviewerID")
ITEM_KEYS = ("parent_asin", "asin")
_ID_KEYS = (USER_KEYS, ITEM_KEYS)
REVIEW_COLUMNS = ("user_id", "reviewerID", "parent_asin", "asin", "rating", "overall", "title", "summary",
                  "text", "reviewText", "timestamp", "sort_timestamp", "unixReviewTime", "reviewTime")


_MAX_INT_RATING = 2**53  # larger ints take the full path, which reports those too large for a float


def parse_review(obj: dict, file: str, line: int, issues: InputIssues) -> Optional[Review]:
    """Normalise one review object; report and return None when it must be skipped."""
    # fast path for the common clean record; anything unusual takes the full path
    get = obj.get
    u = get("user_id")
    if u is None:
        u = get("reviewerID")
    i = get("parent_asin")
    if i is None:
        i = get("asin")
    t = get("timestamp")
    scale = 1
    if t is None:
        t = get("sort_timestamp")
        if t is None:
            t = get("unixReviewTime")
            scale = 1000
    if type(u) is str and type(i) is str and type(t) is int and 0 <= t < MAX_MS // 1000:
        u = u.strip()
        i = i.strip()
        r = get("rating")
        if r is None:
            r = get("overall")
        tr = type(r)
        if u and i and u.isprintable() and i.isprintable() and (
                r is None or (tr is int and -_MAX_INT_RATING < r < _MAX_INT_RATING)
                or (tr is float and math.isfinite(r))):
            title = get("title") if "title" in obj else get("summary")
            text = get("text") if "text" in obj else get("reviewText")
            return Review(u, i, None if r is None else float(r), t * scale, as_text(title), as_text(text), file, line)
    return _parse_review_full(obj, file, line, issues)


def _parse_review_full(obj: dict, file: str, line: int, issues: InputIssues) -> Optional[Review]:
    ids = []
    for keys in _ID_KEYS:
        value = checked_id(obj, keys, issues, file, line)
        if value is None:
            return None
        ids.append(value)
    try:
        field, ts = review_timestamp(obj)
    except ValueError as e:
        issues.bad("bad_timestamp", file, line, e.args[1], e.args[0])
        return None
    if ts is None:
        issues.drop("missing_timestamp", file, line, "timestamp/unixReviewTime", "no timestamp")
        return None
    if ts < 0:
        issues.drop("negative_timestamp", file, line, field, f"negative timestamp {ts} ms")
        return None
    rating_key = "rating" if obj.get("rating") is not None else "overall"
    try:
        rating = parse_rating(obj.get(rating_key))
    except ValueError as e:
        issues.bad("bad_rating", file, line, rating_key, str(e))
        return None
    title = obj.get("title") if "title" in obj else obj.get("summary")
    text = obj.get("text") if "text" in obj else obj.get("reviewText")
    return Review(ids[0], ids[1], rating, ts, as_text(title), as_text(text), file, line)


def read_reviews(paths: Union[PathLike, Iterable[PathLike]], issues: Optional[InputIssues] = None, *,
                 progress: bool = False) -> Iterator[Review]:
    """Stream normalised reviews from one or more files, in file order."""
    if issues is None:
        issues = InputIssues()
    for path in check_inputs(paths, "reviews"):
        name = str(path)
        for line, obj in iter_objects(path, issues, progress=progress, columns=REVIEW_COLUMNS):
            review = parse_review(obj, name, line, issues)
            if review is not None:
                yield review
