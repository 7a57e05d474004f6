"""``python -m dataset_converters stats DATASET_DIR``: describe a converted dataset folder.

Everything is read from the files themselves (not from ``<ds>.stats.json``): the users, items and
interactions from ``<ds>.inter``, the split sizes from ``<ds>.{train,valid,test}.inter``, the
modality coverage from the sidecars (``<ds>.item_text.parquet``, ``<ds>.user_text.parquet``,
``<ds>.item_graph.parquet``; names from :mod:`.text` and :mod:`.graph`) and from
``images/manifest.jsonl`` when images were downloaded.
A missing sidecar is reported as ``null`` (``--json``) or ``not written`` (table).

:func:`dataset_stats` returns a dict (the ``--json`` output)::

    {"dataset", "path",
     "counts": {"users", "items", "interactions", "train", "valid", "test"},
     "sparsity": 1 - interactions / (users * items),
     "coverage": {
        "item_text": {"items", "with_text", "fraction", "sources": {source: items}} | null,
        "images": {"items", "ok", "fraction", "status": {status: items}} | null,
        "item_graph": {"items", "with_neighbors", "isolated", "fraction", "edges",
                       "edges_by_source": {"meta", "cooc", "both"}} | null,
        "user_text": {"users", "with_text", "fraction", "reviews"} | null},
     "interactions_per_user": {"min", "25%", "50%", "75%", "90%", "99%", "max", "mean"},
     "interactions_per_item": {...}}

Fractions are over the users and items of ``<ds>.inter``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .graph import item_graph_path
from .issues import ConversionError
from .records import PathLike
from .text import item_text_path, user_text_path

QUANTILES = (("min", 0.0), ("25%", 0.25), ("50%", 0.5), ("75%", 0.75), ("90%", 0.9), ("99%", 0.99),
             ("max", 1.0))
_SPLITS = ("train", "valid", "test")


def find_dataset(dataset_dir: PathLike) -> Tuple[Path, str]:
    """``(folder, dataset name)``: the name is the folder's when ``<folder>/<folder>.inter`` exists,
    else the prefix of the only ``*.inter`` file that is not a train/valid/test split."""
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise ConversionError(f"dataset folder not found: {folder}")
    if (folder / f"{folder.name}.inter").is_file():
        return folder, folder.name
    names = sorted(p.name[:-len(".inter")] for p in folder.glob("*.inter")
                   if not any(p.name.endswith(f".{s}.inter") for s in _SPLITS))
    if len(names) != 1:
        what = "no <name>.inter file" if not names else f"several .inter files ({', '.join(names)})"
        raise ConversionError(f"{folder}: {what}; expected one converted dataset")
    return folder, names[0]


def _count_rows(path: Path) -> Optional[int]:
    """Data rows of an atomic file (lines after the header); None when the file is absent."""
    if not path.is_file():
        return None
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            n += block.count(b"\n")
            last = block[-1:]
    if last != b"\n":
        n += 1
    return max(n - 1, 0)


def _read_ids(path: Path):
    """``(user codes, item codes, n users, item ids)`` from the first two columns of an ``.inter`` file."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t", usecols=[0, 1], dtype=str, keep_default_na=False, na_filter=False,
                         quoting=csv.QUOTE_MINIMAL, engine="c")
    except (OSError, ValueError) as e:
        raise ConversionError(f"cannot read {path}: {e}") from None
    cols = [c.split(":", 1)[0] for c in df.columns]
    if cols != ["user_id", "item_id"]:
        raise ConversionError(f"{path}: expected user_id and item_id as the first columns, got {cols}")
    u, users = pd.factorize(df.iloc[:, 0])
    i, items = pd.factorize(df.iloc[:, 1])
    return u, i, len(users), items


def quantiles(counts: np.ndarray) -> Dict[str, float]:
    if len(counts) == 0:
        return {k: None for k, _ in QUANTILES} | {"mean": None}
    q = np.quantile(counts, [p for _, p in QUANTILES])
    out = {k: (int(v) if float(v).is_integer() else round(float(v), 2)) for (k, _), v in zip(QUANTILES, q)}
    out["mean"] = round(float(np.mean(counts)), 2)
    return out


def _frac(a: int, n: int) -> Optional[float]:
    return round(a / n, 4) if n else None


def _parquet_columns(path: Path, columns: List[str]):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except Exception as e:  # pyarrow raises its own error types
        raise ConversionError(f"cannot read {path}: {e}") from None


def _value_counts(table, column: str) -> Dict[str, int]:
    import pyarrow.compute as pc

    vc = pc.value_counts(table.column(column)).to_pylist()
    return {d["values"]: int(d["counts"]) for d in vc if d["values"] is not None}


def _item_text(path: Path, n_items: int) -> Optional[dict]:
    if not path.is_file():
        return None
    sources = _value_counts(_parquet_columns(path, ["source"]), "source")
    with_text = sum(v for k, v in sources.items() if k != "missing")
    return {"items": sum(sources.values()), "with_text": with_text, "fraction": _frac(with_text, n_items),
            "sources": sources}


def _user_text(path: Path, n_users: int) -> Optional[dict]:
    if not path.is_file():
        return None
    import pyarrow.compute as pc

    t = _parquet_columns(path, ["source", "n_reviews"])
    sources = _value_counts(t, "source")
    with_text = sum(v for k, v in sources.items() if k != "missing")
    reviews = pc.sum(t.column("n_reviews")).as_py() or 0
    return {"users": t.num_rows, "with_text": with_text, "fraction": _frac(with_text, n_users),
            "reviews": int(reviews)}


def _item_graph(path: Path, n_items: int) -> Optional[dict]:
    if not path.is_file():
        return None
    import pyarrow.compute as pc

    t = _parquet_columns(path, ["item_id", "neighbor_id", "source"])
    has = pc.is_valid(t.column("neighbor_id"))
    listed = pc.count_distinct(t.column("item_id")).as_py()
    with_nb = pc.count_distinct(pc.filter(t.column("item_id"), has)).as_py()
    by_source = _value_counts(t.filter(has), "source")
    edges = {k: by_source.get(k, 0) // 2 for k in ("meta", "cooc", "both")}
    return {"items": listed, "with_neighbors": with_nb, "isolated": listed - with_nb,
            "fraction": _frac(with_nb, n_items), "edges": sum(edges.values()), "edges_by_source": edges}


def _images(folder: Path, item_ids: Optional[set], n_items: int) -> Optional[dict]:
    try:
        from .images import load_manifest
    except Exception:  # the images module (or its image library) is unavailable
        return None
    manifest = load_manifest(folder)
    if not manifest:
        return None
    status: Dict[str, int] = {}
    for item_id, rec in manifest.items():
        if item_ids is None or item_id in item_ids:
            s = str(rec.get("status"))
            status[s] = status.get(s, 0) + 1
    ok = status.get("ok", 0)
    return {"items": sum(status.values()), "ok": ok, "fraction": _frac(ok, n_items), "status": status}


def dataset_stats(dataset_dir: PathLike) -> dict:
    """The description of a converted dataset folder (see the module docstring)."""
    folder, name = find_dataset(dataset_dir)
    u, i, n_users, item_index = _read_ids(folder / f"{name}.inter")
    n_items = len(item_index)
    n_inter = len(u)
    per_user = np.bincount(u, minlength=n_users) if n_users else np.zeros(0, np.int64)
    per_item = np.bincount(i, minlength=n_items) if n_items else np.zeros(0, np.int64)
    counts = {"users": n_users, "items": n_items, "interactions": n_inter}
    for s in _SPLITS:
        counts[s] = _count_rows(folder / f"{name}.{s}.inter")
    item_ids = set(item_index) if (folder / "images").is_dir() else None
    return {
        "dataset": name,
        "path": str(folder),
        "counts": counts,
        "sparsity": round(1.0 - n_inter / (n_users * n_items), 6) if n_users and n_items else None,
        "coverage": {
            "item_text": _item_text(item_text_path(folder, name), n_items),
            "images": _images(folder, item_ids, n_items),
            "item_graph": _item_graph(item_graph_path(folder, name), n_items),
            "user_text": _user_text(user_text_path(folder, name), n_users),
        },
        "interactions_per_user": quantiles(per_user),
        "interactions_per_item": quantiles(per_item),
    }


def _n(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.2f}"
    return f"{int(v):,}"


def _pct(f) -> str:
    return "-" if f is None else f"{100 * f:.1f}%"


def format_table(report: dict) -> str:
    """The report as a human-readable table."""
    c = report["counts"]
    cov = report["coverage"]
    lines = [f"dataset        {report['dataset']}  ({report['path']})",
             f"users          {_n(c['users'])}",
             f"items          {_n(c['items'])}",
             f"interactions   {_n(c['interactions'])}  (train {_n(c['train'])}, valid {_n(c['valid'])}, "
             f"test {_n(c['test'])})",
             f"sparsity       {'-' if report['sparsity'] is None else format(report['sparsity'], '.6f')}",
             "",
             "modality coverage"]
    t = cov["item_text"]
    lines.append("  item text    " + ("not written" if t is None else
                                      f"{_n(t['with_text'])} / {_n(c['items'])} items ({_pct(t['fraction'])}); "
                                      + ", ".join(f"{k} {_n(v)}" for k, v in sorted(t["sources"].items()))))
    m = cov["images"]
    lines.append("  images       " + ("not downloaded" if m is None else
                                      f"{_n(m['ok'])} / {_n(c['items'])} items ok ({_pct(m['fraction'])}); "
                                      + ", ".join(f"{k} {_n(v)}" for k, v in sorted(m["status"].items()))))
    g = cov["item_graph"]
    lines.append("  item graph   " + ("not written" if g is None else
                                      f"{_n(g['with_neighbors'])} / {_n(c['items'])} items with neighbours "
                                      f"({_pct(g['fraction'])}), {_n(g['isolated'])} isolated; "
                                      f"{_n(g['edges'])} edges (cooc {_n(g['edges_by_source']['cooc'])}, "
                                      f"meta {_n(g['edges_by_source']['meta'])}, "
                                      f"both {_n(g['edges_by_source']['both'])})"))
    ut = cov["user_text"]
    lines.append("  user text    " + ("not written" if ut is None else
                                      f"{_n(ut['with_text'])} / {_n(c['users'])} users ({_pct(ut['fraction'])}); "
                                      f"{_n(ut['reviews'])} reviews"))
    keys = [k for k, _ in QUANTILES] + ["mean"]
    lines += ["", "interactions per  " + "".join(f"{k:>9}" for k in keys)]
    for what in ("user", "item"):
        q = report[f"interactions_per_{what}"]
        lines.append(f"  {what:<15} " + "".join(f"{_n(q[k]):>9}" for k in keys))
    return "\n".join(lines)
