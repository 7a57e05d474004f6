"""Errors and bad-input accounting shared by every conversion stage."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Union

log = logging.getLogger("dataset_converters")

#: Reasons for which a record is *bad input*: skipped and counted by default,
#: fatal with ``strict=True``.
BAD_INPUT_REASONS = (
    "malformed_json",
    "bad_encoding",
    "not_object",  # a JSON value that is not an object (an array, a string...)
    "missing_id",
    "bad_id",
    "bad_timestamp",
    "bad_rating",
)

#: Reasons for which a well-formed record is dropped without being an error
#: (never fatal, even with ``strict=True``).
DROP_REASONS = ("missing_timestamp", "negative_timestamp")

MAX_EXAMPLES = 5


class ConversionError(Exception):
    """A conversion cannot go on; the message is a single line meant for users."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def one_line(text: object, limit: int = 160) -> str:
    """Collapse whitespace and cut ``text`` to ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


class InputIssues:
    """Counts skipped records per reason and keeps the first examples of each.

    Every example reads ``file:line: field: message``. With ``strict=True`` the
    first *bad input* (see :data:`BAD_INPUT_REASONS`) raises
    :class:`ConversionError` with that same text.
    """

    def __init__(self, strict: bool = False, label: str = "records", max_examples: int = MAX_EXAMPLES):
        self.strict = strict
        self.label = label
        self.max_examples = max_examples
        self.records_read = 0  # non-blank lines / rows seen by the readers
        self.counts: Counter = Counter()
        self.examples: Dict[str, List[str]] = {}

    @staticmethod
    def where(file: Union[str, Path], line: int, field: str, message: str) -> str:
        return f"{file}:{line}: {field}: {one_line(message)}"

    def _record(self, reason: str, text: str) -> None:
        self.counts[reason] += 1
        bucket = self.examples.setdefault(reason, [])
        if len(bucket) < self.max_examples:
            bucket.append(text)

    def bad(self, reason: str, file, line: int, field: str, message: str) -> None:
        """Account for a bad input record (raises in strict mode).

        ``reason`` must be one of :data:`BAD_INPUT_REASONS` (ValueError otherwise).
        """
        if reason not in BAD_INPUT_REASONS:
            raise ValueError(f"unknown bad-input reason {reason!r}; add it to BAD_INPUT_REASONS")
        text = self.where(file, line, field, message)
        if self.strict:
            raise ConversionError(f"{text} ({reason}; strict mode stops at the first bad record)")
        self._record(reason, text)

    def drop(self, reason: str, file, line: int, field: str, message: str) -> None:
        """Account for a record dropped on purpose (never raises for bad input).

        ``reason`` must be one of :data:`DROP_REASONS` (ValueError otherwise).
        """
        if reason not in DROP_REASONS:
            raise ValueError(f"unknown drop reason {reason!r}; add it to DROP_REASONS")
        self._record(reason, self.where(file, line, field, message))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_counts(self) -> Dict[str, int]:
        return {k: int(v) for k, v in sorted(self.counts.items())}

    def as_examples(self) -> Dict[str, List[str]]:
        return {k: list(v) for k, v in sorted(self.examples.items())}

    def summary(self) -> str:
        if not self.counts:
            return "none"
        return ", ".join(f"{reason}: {n:,}" for reason, n in sorted(self.counts.items()))

    def report(self, logger: Optional[logging.Logger] = None) -> None:
        """Log the counts and the examples of every reason (no-op when clean)."""
        logger = logger or log
        if not self.counts:
            return
        logger.warning("skipped %s %s (%s)", f"{self.total:,}", self.label, self.summary())
        for reason, lines in sorted(self.examples.items()):
            more = self.counts[reason] - len(lines)
            for text in lines:
                logger.warning("  %s: %s", reason, text)
            if more > 0:
                logger.warning("  %s: ... and %s more", reason, f"{more:,}")
