"""Field parsers shared by the review and meta readers: ids, timestamps, ratings."""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Optional, Sequence, Tuple

#: Exclusive upper bound of a timestamp in milliseconds: one past the last
#: millisecond :mod:`datetime` can represent (9999-12-31T23:59:59.999Z), so
#: every accepted timestamp can be written as a date.
MAX_MS = 253402300799999 + 1

_BAD_ID_CHARS = re.compile(r"[\t\n\r\x0b\x0c\x1c-\x1f\x85\u2028\u2029]")


def json_type(obj) -> str:
    """How a JSON value is named in messages: ``a string``, ``an array``..."""
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, (int, float)):
        return "a number"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, (list, tuple)):
        return "an array"
    return type(obj).__name__


def get_id(obj: dict, keys: Sequence[str]) -> Tuple[str, object]:
    """First non-empty value among ``keys``; ``(key, value)`` (value None if absent)."""
    for key in keys:
        value = obj.get(key)
        if value:
            return key, value
        if value is not None and value != "" and not isinstance(value, str):
            return key, value  # falsy but present, e.g. 0
    return keys[0], None


def clean_id(value) -> str:
    """Return an id as a string; raise ValueError for values that cannot be ids (not a string or an
    integer, a tab or line break inside, or a lone surrogate that UTF-8 cannot encode)."""
    if type(value) is str:
        s = value.strip()
        if s.isprintable():  # fast path: no control characters at all
            return s
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected a string id, got {json_type(value)}")
    else:
        s = str(value).strip()
    if _BAD_ID_CHARS.search(s):
        raise ValueError(f"id contains a tab or line break: {s!r}")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from the JSON escape "\ud800"
        raise ValueError(f"id is not valid Unicode (lone surrogate): {s!r}") from None
    return s


def checked_id(obj: dict, keys: Sequence[str], issues, file: str, line: int) -> Optional[str]:
    """The record's id under the first of ``keys`` present, or None after reporting why to ``issues``."""
    key, value = get_id(obj, keys)
    if value is None:
        issues.bad("missing_id", file, line, "/".join(keys), "missing or empty")
        return None
    try:
        value = clean_id(value)
    except ValueError as e:
        issues.bad("bad_id", file, line, key, str(e))
        return None
    if not value:
        issues.bad("missing_id", file, line, key, "empty after trimming spaces")
        return None
    return value


def to_millis(value, scale: int) -> int:
    """Convert a timestamp (number, numeric string or datetime) to milliseconds.

    ``scale`` is 1 for values in milliseconds and 1000 for values in seconds.
    Raises ValueError when the value cannot be a timestamp.
    """
    if type(value) is int and 0 <= value < MAX_MS // scale:  # fast path
        return value * scale
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return int(round(value.timestamp() * 1000))
    if isinstance(value, str):
        s = value.strip()
        try:
            value = int(s)
        except ValueError:
            try:
                value = float(s)
            except ValueError:
                raise ValueError(f"not a number: {value!r}") from None
    if isinstance(value, int):
        ms = value * scale
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        ms = int(round(value * scale))
    else:
        raise ValueError(f"expected a number, got {json_type(value)}")
    if abs(ms) >= MAX_MS:
        raise ValueError(f"out of range: {value!r}")
    return ms


def parse_review_time(value) -> int:
    """2018 ``reviewTime`` (``"09 1, 2016"``, month day, year) to UTC milliseconds."""
    if not isinstance(value, str):
        raise ValueError(f"expected a date string, got {json_type(value)}")
    try:
        d = _dt.datetime.strptime(" ".join(value.replace(",", ", ").split()), "%m %d, %Y")
    except ValueError:
        raise ValueError(f"not a 'MM DD, YYYY' date: {value!r}") from None
    return int(d.replace(tzinfo=_dt.timezone.utc).timestamp()) * 1000


_TIME_FIELDS = (("timestamp", 1), ("sort_timestamp", 1), ("unixReviewTime", 1000))


def review_timestamp(obj: dict) -> Tuple[str, Optional[int]]:
    """``(field, milliseconds)``; milliseconds is None when no time field is set.

    Raises ValueError (with the field name in ``args[1]``) for unparseable values.
    """
    for key, scale in _TIME_FIELDS:
        value = obj.get(key)
        if value is not None and value != "":
            try:
                return key, to_millis(value, scale)
            except ValueError as e:
                raise ValueError(str(e), key) from None
    value = obj.get("reviewTime")
    if value is not None and value != "":
        try:
            return "reviewTime", parse_review_time(value)
        except ValueError as e:
            raise ValueError(str(e), "reviewTime") from None
    return "timestamp", None


def parse_rating(value) -> Optional[float]:
    """A rating as float, None when missing; ValueError when not a finite number."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        r = float(value.strip() if isinstance(value, str) else value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"out of range: {value!r}") from None
    except (TypeError, ValueError):
        raise ValueError(f"not a number: {value!r}") from None
    if not math.isfinite(r):
        raise ValueError(f"not a finite number: {value!r}")
    return r


def as_text(value) -> str:
    """A value as text; None is empty."""
    if type(value) is str:
        return value
    return "" if value is None else str(value)
