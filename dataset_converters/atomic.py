"""RecBole atomic-file writers and the staging folder that makes output all-or-nothing.

Atomic files are tab-separated with a ``name:type`` header (``user_id:token``,
``title:token_seq``, ``price:float``...). Cells never hold tabs or line
breaks; a cell holding ``"`` is written CSV-style (``"a ""b"" c"``) because
RecBole reads these files with :func:`pandas.read_csv`, which would otherwise
treat the quote as the start of a quoted field.

Everything is first written inside a staging folder in the output folder
(each file as ``<name>.part``, renamed when complete); :meth:`Staging.commit`
then moves each file into ``<out>/<dataset>/`` with :func:`os.replace`, and
:meth:`Staging.abort` removes the staging folder on failure.

A dataset folder is complete iff ``<ds>.stats.json`` exists. The files are
moved one at a time, so :meth:`Staging.commit` first deletes the old
``<ds>.stats.json``, then moves every other file, and moves the new
``<ds>.stats.json`` last: a commit that fails or is killed midway leaves a
folder without it, never new ``.inter`` files beside an old split under a
stats file that claims they belong together.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from .meta import ItemMeta

ROWS_PER_WRITE = 1 << 18
COMPLETE_MARKER = "stats.json"  # suffix of the file whose presence marks a complete dataset folder

INTER_SUFFIXES = ("inter", "train.inter", "valid.inter", "test.inter")
ITEM_COLUMNS = (
    ("item_id", "token"),
    ("title", "token_seq"),
    ("store", "token"),
    ("main_category", "token"),
    ("categories", "token_seq"),
    ("price", "float"),
    ("average_rating", "float"),
)


def cell(value: str) -> str:
    """A string cell, quoted CSV-style only when it holds a double quote."""
    if '"' in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def float_cell(value: Optional[float]) -> str:
    """Shortest round-trip text of a float; empty for None/NaN."""
    if value is None or value != value:
        return ""
    return repr(float(value))


def seconds_text(ms: np.ndarray) -> List[str]:
    """Milliseconds as seconds: ``1500000000`` or ``1500000000.25`` (up to 3 decimals), one per value."""
    secs, frac = np.divmod(np.asarray(ms, dtype=np.int64), 1000)
    return [str(s) if f == 0 else f"{s}.{f:03d}".rstrip("0") for s, f in zip(secs.tolist(), frac.tolist())]


class Staging:
    """A temporary folder inside ``out_dir`` holding the outputs until commit."""

    def __init__(self, out_dir: Path, dataset: str):
        self.out_dir = Path(out_dir)
        self.dataset = dataset
        self._created = []
        d = self.out_dir
        while not d.exists():
            self._created.append(d)
            d = d.parent
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{dataset}.staging-", dir=self.out_dir))
        self.files: Dict[str, Path] = {}

    def filename(self, suffix: str) -> str:
        return f"{self.dataset}.{suffix}"

    @contextmanager
    def open(self, suffix: str):
        """Open ``<dataset>.<suffix>`` for writing; it appears only once closed cleanly."""
        final = self.dir / self.filename(suffix)
        part = final.with_name(final.name + ".part")
        with open(part, "w", encoding="utf-8", newline="\n") as f:
            yield f
        os.replace(part, final)
        self.files[suffix] = final

    def commit(self, known_suffixes: Iterable[str] = ()) -> Dict[str, Path]:
        """Move every staged file into ``out_dir/<dataset>/``; return suffix -> final path.

        Files of ``known_suffixes`` that this run did not produce are removed
        from the destination, so that no stale output is mixed with new ones.
        The ``stats.json`` marker must be staged: the old one is deleted
        before anything else moves and the new one moved last (see the
        module docstring).
        """
        marker = self.files.get(COMPLETE_MARKER)
        if marker is None:
            raise ValueError(f"nothing to commit without {self.filename(COMPLETE_MARKER)}")
        dest = self.out_dir / self.dataset
        dest.mkdir(parents=True, exist_ok=True)
        try:
            (dest / marker.name).unlink()
        except FileNotFoundError:
            pass
        out = {}
        for suffix, path in self.files.items():
            if suffix != COMPLETE_MARKER:
                out[suffix] = dest / path.name
                os.replace(path, out[suffix])
        for suffix in known_suffixes:
            stale = dest / self.filename(suffix)
            if suffix not in self.files and stale.is_file():
                stale.unlink()
        out[COMPLETE_MARKER] = dest / marker.name
        os.replace(marker, out[COMPLETE_MARKER])
        shutil.rmtree(self.dir, ignore_errors=True)
        return out

    def abort(self) -> None:
        """Remove the staging folder, and the output folders this run created if left empty."""
        shutil.rmtree(self.dir, ignore_errors=True)
        for d in self._created:
            try:
                d.rmdir()
            except OSError:
                break


@contextmanager
def staged(out_dir: Path, dataset: str):
    """A :class:`Staging` folder for the block; if the block fails, the folder (and any output folder this run
    created) is removed, so a failed run leaves nothing behind. An ``OSError`` becomes a ``ConversionError``
    naming ``out_dir``."""
    from .issues import ConversionError

    staging = None
    try:
        staging = Staging(out_dir, dataset)
        yield staging
    except OSError as e:
        if staging is not None:
            staging.abort()
        raise ConversionError(f"cannot write the dataset into {out_dir}: {e}") from None
    except BaseException:
        if staging is not None:
            staging.abort()
        raise


def write_json(staging: Staging, suffix: str, obj) -> None:
    with staging.open(suffix) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def inter_header(with_rating: bool) -> str:
    cols = ["user_id:token", "item_id:token"] + (["rating:float"] if with_rating else []) + ["timestamp:float"]
    return "\t".join(cols) + "\n"


def write_interactions(staging: Staging, user_ids: Sequence[str], item_ids: Sequence[str],
                       user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, rating: np.ndarray,
                       order: np.ndarray, part: np.ndarray, *, with_rating: bool) -> Dict[str, int]:
    """Write ``.inter`` (rows in ``order``) and the train/valid/test files by ``part``.

    The rating column is written only when ``with_rating``; NaN ratings are
    empty cells. Returns the number of rows per file suffix.
    """
    header = inter_header(with_rating)
    users = [cell(u) for u in user_ids]
    items = [cell(i) for i in item_ids]
    counts = dict.fromkeys(INTER_SUFFIXES, 0)
    with staging.open("inter") as f_all, staging.open("train.inter") as f_tr, \
            staging.open("valid.inter") as f_va, staging.open("test.inter") as f_te:
        outs = (f_tr, f_va, f_te)
        for f in (f_all,) + outs:
            f.write(header)
        for a in range(0, len(order), ROWS_PER_WRITE):
            rows = order[a:a + ROWS_PER_WRITE]
            ts = seconds_text(timestamp[rows])
            u_l, i_l = user[rows].tolist(), item[rows].tolist()
            if with_rating:
                rs = ["" if r != r else f"{r:g}" for r in rating[rows].tolist()]
                lines = [f"{users[u]}\t{items[i]}\t{r}\t{t}\n" for u, i, r, t in zip(u_l, i_l, rs, ts)]
            else:
                lines = [f"{users[u]}\t{items[i]}\t{t}\n" for u, i, t in zip(u_l, i_l, ts)]
            f_all.write("".join(lines))
            buckets: List[List[str]] = [[], [], []]
            for line, p in zip(lines, part[a:a + ROWS_PER_WRITE].tolist()):
                buckets[p].append(line)
            for f, b in zip(outs, buckets):
                f.write("".join(b))
        counts["inter"] = len(order)
        for suffix, p in zip(INTER_SUFFIXES[1:], range(3)):
            counts[suffix] = int(np.count_nonzero(part == p))
    return counts


class ItemFileWriter:
    """Writes ``<dataset>.item``: one row per item, then drops all-empty columns.

    Rows go to a scratch file first, because whether a column is empty for
    every item is only known at the end; :meth:`finish` writes the real file.
    """

    def __init__(self, staging: Staging):
        self.staging = staging
        self._scratch_path = staging.dir / "item.rows"
        self._scratch = open(self._scratch_path, "w", encoding="utf-8", newline="\n")
        self.nonempty = [False] * len(ITEM_COLUMNS)
        self.rows = 0

    def add(self, item_id: str, meta: Optional[ItemMeta]) -> None:
        if meta is None:
            cells = [cell(item_id)] + [""] * (len(ITEM_COLUMNS) - 1)
        else:
            cells = [cell(item_id), cell(meta.title), cell(meta.store), cell(meta.main_category),
                     cell(meta.categories_tokens), float_cell(meta.price), float_cell(meta.average_rating)]
        for j, c in enumerate(cells):
            if c:
                self.nonempty[j] = True
        self._scratch.write("\t".join(cells) + "\n")
        self.rows += 1

    def finish(self) -> List[str]:
        """Write the ``.item`` file; return the names of the columns written."""
        self._scratch.close()
        keep = [0] + [j for j in range(1, len(ITEM_COLUMNS)) if self.nonempty[j]]
        with self.staging.open("item") as out, open(self._scratch_path, encoding="utf-8", newline="\n") as src:
            out.write("\t".join(f"{n}:{t}" for n, t in (ITEM_COLUMNS[j] for j in keep)) + "\n")
            if len(keep) == len(ITEM_COLUMNS):
                shutil.copyfileobj(src, out)
            else:
                for line in src:
                    cells = line.rstrip("\n").split("\t")
                    out.write("\t".join(cells[j] for j in keep) + "\n")
        os.unlink(self._scratch_path)
        return [ITEM_COLUMNS[j][0] for j in keep]

    def close(self) -> None:
        if not self._scratch.closed:
            self._scratch.close()
