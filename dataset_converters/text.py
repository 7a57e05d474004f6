"""Item and user text sidecars: the rules that build each document, and their Parquet files.

A converted dataset folder holds two text files beside the atomic files (written unless the
conversion runs with ``--no-sidecars``):

``<ds>.item_text.parquet``
    one row per kept item, every kept item exactly once, in the order in which the items first
    appear in ``<ds>.inter`` (the order RecBole meets them). The row order is not a contract:
    readers should join on ``item_id``, not on row positions:

    =======  ======  ==================================================================
    item_id  string  the raw item id, as in ``<ds>.inter``
    text     string  the item's document; ``""`` when ``source`` is ``missing``
    source   string  ``title_description``, ``title``, ``reviews`` or ``missing``
    =======  ======  ==================================================================

``<ds>.user_text.parquet``
    one row per kept user, every kept user exactly once, in the order in which the users first
    appear in ``<ds>.inter``; as above, readers should join on ``user_id``:

    =========  ======  ================================================================
    user_id    string  the raw user id, as in ``<ds>.inter``
    text       string  the user's document; ``""`` when ``source`` is ``missing``
    n_reviews  int32   the number of reviews in the document
    source     string  ``reviews`` or ``missing``
    =========  ======  ================================================================

Item document, from the item's meta record: the title, then the description (2023 and 2018: a
list of paragraphs; 2014: a string), then the features (2023 ``features``, 2018 ``feature``), one
part a line; HTML entities are unescaped, ``<br>`` tags read as spaces and whitespace runs
collapsed to one space. ``source`` is ``title_description`` when the item has a description,
else ``title`` when it has a title. An item with neither a title nor a description (or without
a meta record) gets its *training* reviews instead: its last 5 training reviews are picked, those
without any text are left out, and the others are written most recent first, one review a line
(``source`` ``reviews``); an item none of whose 5 picked reviews has text is ``missing``.

User document: the user's last N *training* reviews are picked (N = 5 by default,
``--user-reviews``), then those without any text (no title and no text) are left out; the others
are written oldest first, one review a line, and ``n_reviews`` counts them. The reviews are picked
before the empty ones are dropped, so ``n_reviews`` can be below N while older training reviews
have text, and a user whose last N training reviews all lack text is ``missing`` even when older
ones have some. Validation and test reviews are never used, so the sidecars do not leak the
held-out interactions.

A review as a line: its title, then its text (``"Great. Works well"``); a ``.`` is put between
them unless the title already ends with ``.``, ``!``, ``?``, ``:`` or ``;`` (then only a space).

Reading: :func:`read_item_text` and :func:`read_user_text` return a :class:`pandas.DataFrame`
indexed by the raw id; ``pandas.read_parquet`` or ``pyarrow.parquet.read_table`` work as well.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from .meta import ItemMeta, clean_text

PathLike = Union[str, "os.PathLike[str]"]

ITEM_TEXT_SUFFIX = "item_text.parquet"
USER_TEXT_SUFFIX = "user_text.parquet"

TITLE_DESCRIPTION, TITLE, REVIEWS, MISSING = "title_description", "title", "reviews", "missing"
ITEM_SOURCES = (TITLE_DESCRIPTION, TITLE, REVIEWS, MISSING)
ITEM_REVIEWS = 5  # reviews in the document of an item without title and description
USER_REVIEWS = 5  # default number of reviews in a user's document

ROW_GROUP_ROWS = 65_536
ROW_GROUP_BYTES = 64 << 20  # a row group is flushed once its texts reach this size
COMPRESSION = "zstd"

_BR = re.compile(r"<\s*br\s*/?\s*>", re.I)
_SENTENCE_END = (".", "!", "?", ":", ";")  # a title ending with one of these needs no added "."


def item_text_path(folder: PathLike, dataset: str) -> Path:
    """``<folder>/<dataset>.item_text.parquet``."""
    return Path(folder) / f"{dataset}.{ITEM_TEXT_SUFFIX}"


def user_text_path(folder: PathLike, dataset: str) -> Path:
    """``<folder>/<dataset>.user_text.parquet``."""
    return Path(folder) / f"{dataset}.{USER_TEXT_SUFFIX}"


def clean(value) -> str:
    """One line of text: ``<br>`` tags read as spaces, HTML entities unescaped, whitespace collapsed,
    characters that UTF-8 cannot hold (lone surrogates) replaced by ``?``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    if "<" in value:
        value = _BR.sub(" ", value)
    value = clean_text(value)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from JSON escapes such as "\ud800"
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _parts(values: Iterable) -> List[str]:
    return [p for p in (clean(v) for v in values) if p]


def item_meta_text(meta: Optional[ItemMeta]) -> Tuple[str, Optional[str]]:
    """``(document, source)`` of an item from its meta record.

    ``source`` is ``title_description`` or ``title``; ``("", None)`` means that the item has neither
    a title nor a description (or no meta record) and needs its reviews instead.
    """
    if meta is None:
        return "", None
    title = clean(meta.title)
    description = _parts(meta.description)  # lists, whatever the schema (see meta.parse_meta)
    if not title and not description:
        return "", None
    features = _parts(meta.features)
    lines = ([title] if title else []) + description + features
    return "\n".join(lines), TITLE_DESCRIPTION if description else TITLE


def review_line(title, text) -> str:
    """A review as one line: title, then text (see the module docstring); ``""`` when both are empty."""
    title, text = clean(title), clean(text)
    if not title or not text:
        return title or text
    sep = " " if title.endswith(_SENTENCE_END) else ". "
    return title + sep + text


def join_reviews(lines: Sequence[str]) -> Tuple[str, int]:
    """``(document, number of non-empty reviews)`` from review lines, in the order given."""
    kept = [line for line in lines if line]
    return "\n".join(kept), len(kept)


# --------------------------------------------------------------------------- Parquet files


def item_text_schema():
    import pyarrow as pa

    return pa.schema([("item_id", pa.string()), ("text", pa.string()), ("source", pa.string())])


def user_text_schema():
    import pyarrow as pa

    return pa.schema([("user_id", pa.string()), ("text", pa.string()), ("n_reviews", pa.int32()),
                      ("source", pa.string())])


class ParquetRows:
    """Writes one Parquet file row by row, a row group at a time, as ``<path>.part`` renamed when closed.

    Use as a context manager: on an exception the partial file is removed and ``path`` is not created.
    """

    def __init__(self, path: PathLike, schema, *, row_group_rows: int = ROW_GROUP_ROWS,
                 row_group_bytes: int = ROW_GROUP_BYTES):
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self._columns: List[list] = [[] for _ in schema.names]
        self._bytes = 0
        self.rows = 0
        self._writer = pq.ParquetWriter(self.part, schema, compression=COMPRESSION)

    def add(self, *values) -> None:
        for col, v in zip(self._columns, values):
            col.append(v)
        for v in values:
            if isinstance(v, str):
                self._bytes += len(v)
        self.rows += 1
        if len(self._columns[0]) >= self.row_group_rows or self._bytes >= self.row_group_bytes:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self._columns[0]:
            arrays = [pa.array(col, type=f.type) for col, f in zip(self._columns, self.schema)]
            self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
            self._columns = [[] for _ in self.schema.names]
            self._bytes = 0

    def close(self) -> Path:
        self.flush()
        self._writer.close()
        os.replace(self.part, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:
            pass
        try:
            os.unlink(self.part)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "ParquetRows":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _read(path: PathLike, key: str, columns: Optional[Sequence[str]]):
    import pyarrow.parquet as pq

    cols = None if columns is None else [key] + [c for c in columns if c != key]
    df = pq.read_table(path, columns=cols).to_pandas()
    return df.set_index(key)


def read_item_text(path: PathLike, columns: Optional[Sequence[str]] = None):
    """``<ds>.item_text.parquet`` as a DataFrame indexed by ``item_id`` (columns ``text``, ``source``)."""
    return _read(path, "item_id", columns)


def read_user_text(path: PathLike, columns: Optional[Sequence[str]] = None):
    """``<ds>.user_text.parquet`` as a DataFrame indexed by ``user_id`` (``text``, ``n_reviews``, ``source``)."""
    return _read(path, "user_id", columns)
