"""Import a dataset in MMRec's format (github.com/enoche/MMRec) as RecBole atomic files plus a config file.

Most published multimodal recommendation results (MMRec's Baby / Sports / Clothing tables) are computed on
MMRec's preprocessed files. Importing them lets our models and RecBole's run on exactly the same interactions,
split and item features.

MMRec's format
--------------
As read by MMRec's ``src/utils/dataset.py`` (``pd.read_csv(..., usecols=[USER_ID_FIELD, ITEM_ID_FIELD,
inter_splitting_label], sep=field_separator)``) with ``src/configs/overall.yaml`` and
``src/configs/dataset/<ds>.yaml``:

* ``<ds>.inter``: one header line, then one interaction a line, tab-separated (``field_separator: "\\t"``).
  Columns, in any order: ``userID``, ``itemID`` (0-based integer ids), ``x_label`` (0 train, 1 valid, 2 test;
  ``inter_splitting_label: x_label``), and optionally ``rating`` and ``timestamp``. Other columns are ignored.
  A comma-separated file is accepted too: the separator is sniffed from the header.
* ``image_feat.npy`` (``vision_feature_file``, 4096-d) and ``text_feat.npy`` (``text_feature_file``, 384-d):
  float arrays whose row ``i`` is ``itemID`` ``i``.
* MMRec drops the valid/test interactions of users absent from training (``filter_out_cod_start_users: True``)
  and, at evaluation, masks only each user's *training* items.

What is produced
----------------
:func:`import_mmrec` writes, atomically (nothing is left behind on error), into ``<out_dir>/<dataset>/``:

* ``<ds>.inter`` (every kept row, file order) and ``<ds>.train.inter`` / ``.valid.inter`` / ``.test.inter``
  (the rows of ``x_label`` 0 / 1 / 2): tab-separated, header ``user_id:token item_id:token [rating:float]
  [timestamp:float]``. The tokens are MMRec's integer ids written as decimal strings, so item token ``"i"`` is
  feature row ``i``.
* ``<ds>.item_ids``: the raw item id of every feature row, one a line (``0``, ``1``, ...): the
  ``precomputed_item_ids`` file MMFusion matches the ``.npy`` rows with.
* ``<ds>.item_graph.parquet`` (unless ``graph=False``): the item-item graph from *training* co-occurrence only
  (:mod:`.graph`), so MMFusion's graph modality works on imported data.
* ``<ds>.yaml``: the config of this dataset (``dataset_source: none``, the benchmark split files, the
  precomputed feature files by absolute path, ``test_history_mask: train`` as MMRec masks at test time,
  ``vbpr_channels``, the available ``modalities`` and MMRec's metrics). The ``.npy`` files are validated but not
  copied.
* ``<ds>.stats.json`` (written last; its presence marks a complete import): counts per split, users, items,
  the feature shapes and the graph counts.

Choices: a ``(userID, itemID)`` pair that appears twice is an error naming both lines (MMRec's data holds
none; RecBole would keep both, and a pair in train and test would be masked at test time). Valid/test rows of a
user with no training row are dropped like MMRec does (``drop_cold_start_users=False`` keeps them).

How to run our models on it
---------------------------
::

    python -m dataset_converters import-mmrec --inter data/baby/baby.inter \\
        --image-feat data/baby/image_feat.npy --text-feat data/baby/text_feat.npy --out dataset
    python run_recbole_mm.py --model=LightGCN --dataset=baby --config_files=dataset/baby/baby.yaml
    python run_recbole_mm.py --model=MMFusion --dataset=baby --config_files=dataset/baby/baby.yaml

In Python: ``import_mmrec("data/baby/baby.inter", image_feat=..., text_feat=..., out_dir="dataset")``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .atomic import INTER_SUFFIXES, Staging, staged, write_json
from .graph import GRAPH_SUFFIX, build_item_graph, write_item_graph
from .issues import ConversionError
from .pipeline import ConversionResult, _check_dataset_name, _ensure_logging
from .sidecars import SIDECAR_SUFFIXES

log = logging.getLogger("dataset_converters")

USER, ITEM, LABEL, RATING, TIME = "userID", "itemID", "x_label", "rating", "timestamp"
REQUIRED_COLUMNS = (USER, ITEM, LABEL)
SPLITS = ("train", "valid", "test")  # x_label 0, 1, 2
ITEM_IDS_SUFFIX = "item_ids"
YAML_SUFFIX = "yaml"
#: every file an import writes, plus the converter's files that must not survive beside them
OUTPUT_SUFFIXES = INTER_SUFFIXES + ("item",) + SIDECAR_SUFFIXES + (ITEM_IDS_SUFFIX, YAML_SUFFIX, "stats.json")
MAX_ID_DIGITS = 18  # fits int64

#: MMRec's evaluation protocol (src/configs/overall.yaml), written into the dataset's YAML
MMREC_METRICS = ["Recall", "NDCG", "Precision", "MAP"]
MMREC_TOPK = [5, 10, 20, 50]
MMREC_VALID_METRIC = "Recall@20"

DESCRIPTION = """\
Import a dataset in MMRec's format (github.com/enoche/MMRec): a <ds>.inter file with a header and the columns
userID, itemID, x_label (0 train, 1 valid, 2 test) and optionally rating and timestamp (tab- or
comma-separated, 0-based integer ids), plus the item feature arrays image_feat.npy and text_feat.npy whose
row i is itemID i.

Writes <out>/<dataset>/<dataset>.{inter,train.inter,valid.inter,test.inter} (tokens are MMRec's ids),
<dataset>.item_ids (raw item id of each feature row), <dataset>.item_graph.parquet (training co-occurrence
only; unless --no-graph), <dataset>.yaml (the config to run models with: precomputed features, MMRec's split
and test-time masking) and <dataset>.stats.json. The .npy files are checked, not copied: the YAML points at
them. Valid/test rows of users without training rows are dropped, as MMRec does. Nothing is written unless
the whole import succeeds.
"""

EPILOG = """\
example:
  python -m dataset_converters import-mmrec --inter data/baby/baby.inter \\
      --image-feat data/baby/image_feat.npy --text-feat data/baby/text_feat.npy --out dataset
  python run_recbole_mm.py --model=LightGCN --dataset=baby --config_files=dataset/baby/baby.yaml

exit status: 0 on success, 2 on an input or usage error (message on stderr).
"""


# ----------------------------------------------------------------------------- reading the .inter file

def default_dataset_name(inter_path) -> str:
    """The dataset name of an MMRec file: its name without ``.inter`` (``baby.inter`` -> ``baby``)."""
    name = Path(inter_path).name
    for suffix in (".inter", ".tsv", ".csv", ".txt"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _sniff_header(path: Path) -> tuple[str, List[str]]:
    """``(separator, column names)`` from the first line of ``path``."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = f.readline()
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConversionError(f"{path}: is a folder, not an MMRec .inter file") from None
    except UnicodeDecodeError:
        raise ConversionError(f"{path}:1: the header is not UTF-8 text") from None
    except OSError as e:
        raise ConversionError(f"{path}: cannot read: {e.strerror or e}") from None
    header = header.rstrip("\r\n")
    if not header.strip():
        raise ConversionError(f"{path}:1: empty file or empty header line; MMRec's .inter starts with a header "
                              f"naming the columns ({', '.join(REQUIRED_COLUMNS)}, ...)")
    sep = "\t" if "\t" in header else "," if "," in header else "\t"
    return sep, [c.strip() for c in header.split(sep)]


def _first(mask: np.ndarray) -> Optional[int]:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _int_column(values, path: Path, column: str, line_of) -> np.ndarray:
    """A column of decimal non-negative integers as int64; the first bad cell is a ConversionError."""
    s = values.str.strip()
    ok = s.str.fullmatch(r"\+?[0-9]{1,%d}" % MAX_ID_DIGITS).to_numpy(dtype=bool, na_value=False)
    bad = _first(~ok)
    if bad is not None:
        text = s.iloc[bad]
        if text == "":
            why = "is empty"
        elif text.startswith("-") and text[1:].isdigit():
            why = f"{text!r} is negative; MMRec ids are 0-based"
        elif text.lstrip("+").isdigit():
            why = f"{text!r} is too large"
        else:
            why = f"{text!r} is not an integer"
        raise ConversionError(f"{path}:{line_of(bad)}: {column} {why}")
    return s.str.lstrip("+").astype("int64").to_numpy()


def _float_column(values, path: Path, column: str, line_of, allow_empty: bool) -> tuple[np.ndarray, List[str]]:
    """``(floats, stripped texts)``; a cell that is not a finite number is a ConversionError (empty: NaN)."""
    import pandas as pd

    s = values.str.strip()
    x = pd.to_numeric(s.where(s != "", None), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    empty = (s == "").to_numpy(dtype=bool)
    bad = ~np.isfinite(x) & ~(empty if allow_empty else np.zeros(len(x), dtype=bool))
    first = _first(bad)
    if first is not None:
        text = s.iloc[first]
        why = "is empty" if text == "" else f"{text!r} is not a finite number"
        raise ConversionError(f"{path}:{line_of(first)}: {column} {why}")
    return x, s.tolist()


class _Interactions:
    """The validated rows of an MMRec ``.inter`` file (after dropping blank lines)."""

    def __init__(self, path: Path):
        import pandas as pd

        self.path = path
        sep, columns = _sniff_header(path)
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ConversionError(
                f"{path}:1: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} in the header "
                f"({' | '.join(columns)}); MMRec's .inter needs {', '.join(REQUIRED_COLUMNS)} "
                f"(rating and timestamp are optional)")
        repeated = sorted({c for c in columns if columns.count(c) > 1 and c in REQUIRED_COLUMNS + (RATING, TIME)})
        if repeated:
            raise ConversionError(f"{path}:1: column {repeated[0]} appears twice in the header")
        self.has_rating, self.has_time = RATING in columns, TIME in columns
        wanted = [c for c in REQUIRED_COLUMNS + (RATING, TIME) if c in columns]
        # names must be unique for pandas: an ignored column that repeats gets its position appended
        names = [c if columns.count(c) == 1 else f"{c}#{i}" for i, c in enumerate(columns)]
        try:
            df = pd.read_csv(path, sep=sep, header=0, names=names, dtype=str,
                             keep_default_na=False, na_filter=False, skip_blank_lines=False,
                             quoting=csv.QUOTE_NONE, encoding="utf-8-sig", engine="c")
        # (no usecols: with it pandas would silently ignore a line with too many fields)
        except pd.errors.ParserError as e:  # e.g. "Expected 5 fields in line 7, saw 6" (line counts the header)
            raise ConversionError(f"{path}: {e}") from None
        except UnicodeDecodeError as e:
            raise ConversionError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise ConversionError(f"{path}: cannot read: {e.strerror or e}") from None
        # a blank line is a row of empty cells: skipped, but counted so that line numbers stay right
        blank = np.ones(len(df), dtype=bool)
        for c in wanted:
            blank &= (df[c].str.strip() == "").to_numpy(dtype=bool)
        self.blank_lines = int(blank.sum())
        self.lines = np.flatnonzero(~blank) + 2  # file line of each kept row (the header is line 1)
        if self.blank_lines:
            df = df.loc[~blank]
        if len(df) == 0:
            raise ConversionError(f"{path}: no interactions after the header")
        line_of = lambda k: int(self.lines[k])  # noqa: E731
        self.user = _int_column(df[USER], path, USER, line_of)
        self.item = _int_column(df[ITEM], path, ITEM, line_of)
        label = df[LABEL].str.strip()
        ok = label.isin(("0", "1", "2")).to_numpy(dtype=bool)
        bad = _first(~ok)
        if bad is not None:
            raise ConversionError(f"{path}:{line_of(bad)}: {LABEL} {label.iloc[bad]!r} is not 0, 1 or 2")
        self.part = label.astype("int64").to_numpy().astype(np.int8)
        self.rating = self.rating_text = self.time = self.time_text = None
        if self.has_rating:
            self.rating, self.rating_text = _float_column(df[RATING], path, RATING, line_of, allow_empty=True)
        if self.has_time:
            self.time, self.time_text = _float_column(df[TIME], path, TIME, line_of, allow_empty=False)
        self._check_duplicates()

    def _check_duplicates(self) -> None:
        span = int(self.item.max()) + 1
        if int(self.user.max()) >= (1 << 62) // span:  # key would overflow: rank the users first
            _, user = np.unique(self.user, return_inverse=True)
        else:
            user = self.user
        key = user.astype(np.int64) * span + self.item
        order = np.argsort(key, kind="stable")
        same = np.flatnonzero(key[order][1:] == key[order][:-1])
        if len(same):
            # the repeat that comes first in the file, and the earlier line it repeats
            firsts = order[same]
            seconds = order[same + 1]
            k = int(np.argmin(seconds))
            a, b = int(firsts[k]), int(seconds[k])
            raise ConversionError(
                f"{self.path}:{int(self.lines[b])}: ({USER} {self.user[b]}, {ITEM} {self.item[b]}) repeats line "
                f"{int(self.lines[a])}; {len(same)} repeated pair(s) in all. MMRec's data holds each pair once: "
                f"remove the repeats")


# ----------------------------------------------------------------------------- feature files

def _check_features(path, modality: str, n_needed: int) -> dict:
    """Validate an MMRec feature file (2-D, numeric, >= ``n_needed`` rows) without loading it."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file ({modality} features)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ConversionError(f"{path}: not a .npy array of {modality} features ({e})") from None
    if not isinstance(array, np.ndarray):
        raise ConversionError(f"{path}: not a .npy array of {modality} features (an .npz archive?)")
    if array.ndim != 2 or array.shape[1] == 0:
        raise ConversionError(f"{path}: expected a 2-D array [items, dim] of {modality} features, got shape "
                              f"{tuple(array.shape)}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ConversionError(f"{path}: {modality} features of dtype {array.dtype}, expected numbers")
    if array.shape[0] < n_needed:
        raise ConversionError(f"{path}: {array.shape[0]} rows of {modality} features, but the largest itemID is "
                              f"{n_needed - 1}: row i must be itemID i, so at least {n_needed} rows are needed")
    return {"file": str(path.resolve()), "shape": [int(s) for s in array.shape], "dtype": str(array.dtype)}


# ----------------------------------------------------------------------------- writing

def _inter_header(with_rating: bool, with_time: bool) -> str:
    cols = ["user_id:token", "item_id:token"] + (["rating:float"] if with_rating else []) \
        + (["timestamp:float"] if with_time else [])
    return "\t".join(cols) + "\n"


def _write_inters(staging: Staging, data: _Interactions, rows: np.ndarray) -> Dict[str, int]:
    """``<ds>.inter`` (``rows`` in file order) and the three split files; rows per file suffix."""
    header = _inter_header(data.has_rating, data.has_time)
    columns = [data.user[rows].astype(str).tolist(), data.item[rows].astype(str).tolist()]
    # rating and timestamp: the validated numbers as written in the input (no rounding)
    for present, text in ((data.has_rating, data.rating_text), (data.has_time, data.time_text)):
        if present:
            columns.append([text[r] for r in rows.tolist()])
    lines = ["\t".join(cells) + "\n" for cells in zip(*columns)]
    part = data.part[rows]
    counts = {"inter": len(lines)}
    with staging.open("inter") as f:
        f.write(header)
        f.write("".join(lines))
    for p, name in enumerate(SPLITS):
        suffix = f"{name}.inter"
        keep = np.flatnonzero(part == p).tolist()
        with staging.open(suffix) as f:
            f.write(header)
            f.write("".join(lines[k] for k in keep))
        counts[suffix] = len(keep)
    return counts


def _yaml_value(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a YAML flow scalar (quotes any path safely)
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _config_text(dataset: str, inter_path: Path, out_dir: Path, item_ids_file: Path, features: dict,
                 modalities: List[str], has_time: bool, drop_cold: bool, n_items: int) -> str:
    dest = out_dir / dataset
    yaml_path = dest / f"{dataset}.{YAML_SUFFIX}"
    lines = [
        f"# {dataset}: imported from MMRec's {inter_path} by 'python -m dataset_converters import-mmrec'",
        f"# on {time.strftime('%Y-%m-%d %H:%M:%S')}: MMRec's own split (x_label), ids and item features.",
        "# Use it as the dataset's config file, e.g.",
        f"#   python run_recbole_mm.py --model=LightGCN --dataset={dataset} --config_files={yaml_path}",
        f"#   python run_recbole_mm.py --model=MMFusion --dataset={dataset} --config_files={yaml_path}",
        "# The feature files are referenced, not copied: keep them where they are (or edit the paths).",
        "dataset_source: none                    # (str) The atomic files are here already; never rebuilt.",
        f"data_path: {_yaml_value(str(out_dir))}  # (str) Folder holding {dataset}/.",
        "benchmark_filename: [train, valid, test]  # (list) MMRec's split: x_label 0, 1, 2.",
        "load_col:",
        f"  inter: {_yaml_value(['user_id', 'item_id'] + (['timestamp'] if has_time else []))}",
        "test_history_mask: train                # (str) MMRec masks only the training items at test time.",
        "feature_mode: precomputed               # (str) MMRec's item features from the .npy files below.",
    ]
    if modalities:
        lines.append(f"modalities: {_yaml_value(modalities)}  # (list) The modalities this import provides.")
    else:
        lines.append("# modalities: none available (no feature files and no item graph): MMFusion cannot run")
    for modality in ("text", "image"):
        if modality in features:
            f = features[modality]
            lines.append(f"precomputed_{modality}_file: {_yaml_value(f['file'])}  "
                         f"# (str) {f['shape'][0]} x {f['shape'][1]}, row i = itemID i.")
    lines.append(f"precomputed_item_ids: {_yaml_value(str(item_ids_file))}  # (str) Raw item id of each row.")
    channels = [m for m in ("text", "image") if m in features]
    if channels:
        lines.append(f"vbpr_channels: {_yaml_value(channels)}  # (list) MMRec's VBPR concatenates text then image "
                     "features.")
    # RecBole ranks n_items candidates: a cut-off beyond that fails (only on toy data: MMRec's have thousands)
    topk = [k for k in MMREC_TOPK if k <= n_items] or [n_items]
    valid_metric = MMREC_VALID_METRIC if int(MMREC_VALID_METRIC.split("@")[1]) in topk else f"Recall@{max(topk)}"
    lines += [
        "# MMRec's evaluation protocol (src/configs/overall.yaml)",
        f"metrics: {_yaml_value(MMREC_METRICS)}",
        f"topk: {_yaml_value(topk)}",
        f"valid_metric: {valid_metric}",
    ]
    if not drop_cold:
        lines.append("# valid/test rows of users without training rows were kept (MMRec drops them)")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the import

def import_mmrec(inter_path, *, out_dir="dataset", dataset: Optional[str] = None, image_feat=None, text_feat=None,
                 graph: bool = True, graph_max_neighbors: int = 50,
                 drop_cold_start_users: bool = True) -> ConversionResult:
    """Import MMRec's ``<ds>.inter`` (and its ``image_feat.npy`` / ``text_feat.npy``) into ``<out_dir>/<dataset>/``.

    See the module docstring for the files written. ``dataset`` defaults to the file's name without
    ``.inter``; ``graph=False`` skips the item graph; ``graph_max_neighbors``: neighbours each item keeps in it;
    ``drop_cold_start_users``: drop valid/test rows of users without training rows, as MMRec does.

    Returns a :class:`~.pipeline.ConversionResult`; ``files`` maps each suffix (``"inter"``, ``"train.inter"``,
    ..., ``"item_ids"``, ``"item_graph.parquet"``, ``"yaml"``, ``"stats.json"``) to its path and ``stats`` is the
    content of ``<ds>.stats.json``. Raises :class:`ConversionError` naming the file (and line and column for a bad
    row) for bad input; nothing is written then.
    """
    t0 = time.perf_counter()
    _ensure_logging()
    inter_path = Path(inter_path)
    dataset = _check_dataset_name(default_dataset_name(inter_path) if dataset is None else dataset)
    try:
        graph_max_neighbors = int(graph_max_neighbors)
    except (TypeError, ValueError):
        raise ConversionError(f"graph_max_neighbors must be an integer >= 1, not {graph_max_neighbors!r}") from None
    if graph_max_neighbors < 1:
        raise ConversionError(f"graph_max_neighbors must be an integer >= 1, not {graph_max_neighbors}")
    out_dir = Path(out_dir).resolve()
    for p in (out_dir, out_dir / dataset):
        if p.exists() and not p.is_dir():
            raise ConversionError(f"output path exists and is not a folder: {p}")

    log.info("reading %s", inter_path)
    data = _Interactions(inter_path)
    n_rows = len(data.user)
    n_id_rows = int(data.item.max()) + 1

    features = {}
    for modality, path in (("image", image_feat), ("text", text_feat)):
        if path is not None:
            features[modality] = _check_features(path, modality, n_id_rows)
    if len(features) == 2 and features["image"]["shape"][0] != features["text"]["shape"][0]:
        raise ConversionError(
            f"{image_feat} has {features['image']['shape'][0]} rows but {text_feat} has "
            f"{features['text']['shape'][0]}: both must have one row per itemID (the same item ids file serves both)")
    n_feature_rows = next(iter(features.values()))["shape"][0] if features else n_id_rows

    # MMRec's filter_out_cod_start_users: valid/test rows of users absent from training
    train = data.part == 0
    if not train.any():
        raise ConversionError(f"{inter_path}: no training rows (x_label 0)")
    keep = np.ones(n_rows, dtype=bool)
    if drop_cold_start_users:
        keep = train | np.isin(data.user, np.unique(data.user[train]))
    rows = np.flatnonzero(keep)
    n_cold = n_rows - len(rows)
    if n_cold:
        log.info("dropped %s valid/test rows of %s users without training rows (as MMRec does)", f"{n_cold:,}",
                 f"{len(np.unique(data.user[~keep])):,}")
    users, items = np.unique(data.user[rows]), np.unique(data.item[rows])
    if n_feature_rows > len(items):
        log.info("%s itemIDs below %s have no interaction: RecBole will not rank them (MMRec ranks all %s)",
                 f"{n_feature_rows - len(items):,}", n_feature_rows, f"{n_feature_rows:,}")
    for p, name in enumerate(SPLITS[1:], start=1):
        if not np.any(data.part[rows] == p):
            log.warning("%s: the %s split is empty (no x_label %d rows)", inter_path, name, p)

    with staged(out_dir, dataset) as staging:
        sizes = _write_inters(staging, data, rows)
        with staging.open(ITEM_IDS_SUFFIX) as f:
            f.write("".join(f"{i}\n" for i in range(n_feature_rows)))
        graph_stats = None
        if graph:
            item_index = np.searchsorted(items, data.item[rows])
            _, user_index = np.unique(data.user[rows], return_inverse=True)
            g = build_item_graph(user_index, item_index, data.part[rows] == 0, len(items),
                                 max_neighbors=graph_max_neighbors,
                                 timestamp=data.time[rows] if data.has_time else None)
            path = staging.dir / staging.filename(GRAPH_SUFFIX)
            graph_stats = write_item_graph(path, g, items.astype(str).tolist())
            staging.files[GRAPH_SUFFIX] = path
        modalities = [m for m in ("text", "image") if m in features] + (["graph"] if graph else [])
        dest = out_dir / dataset
        with staging.open(YAML_SUFFIX) as f:
            f.write(_config_text(dataset, inter_path, out_dir, dest / staging.filename(ITEM_IDS_SUFFIX), features,
                                 modalities, data.has_time, drop_cold_start_users, len(items)))
        stats = {
            "dataset": dataset,
            "source": "mmrec",
            "inputs": {"inter": str(inter_path.resolve()),
                       "image_feat": features.get("image", {}).get("file"),
                       "text_feat": features.get("text", {}).get("file")},
            "counts": {
                "rows_read": n_rows,
                "blank_lines": data.blank_lines,
                "cold_start_rows_dropped": n_cold,
                "users": int(len(users)),
                "items": int(len(items)),
                "interactions": sizes["inter"],
                "train": sizes["train.inter"],
                "valid": sizes["valid.inter"],
                "test": sizes["test.inter"],
                "max_user_id": int(data.user.max()),
                "max_item_id": n_id_rows - 1,
                "feature_rows": n_feature_rows,
                "feature_rows_without_interactions": int(n_feature_rows - len(items)),
            },
            "features": features,
            "columns": {"inter": ["user_id", "item_id"] + (["rating"] if data.has_rating else [])
                        + (["timestamp"] if data.has_time else [])},
            "split": "MMRec x_label: 0 train, 1 valid, 2 test",
            "drop_cold_start_users": bool(drop_cold_start_users),
            "modalities": modalities,
            "graph": None if graph_stats is None else {**graph_stats, "max_neighbors": graph_max_neighbors,
                                                       "from": "training co-occurrence"},
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_json(staging, "stats.json", stats)
        files = staging.commit(OUTPUT_SUFFIXES)
    log.info("%s: %s users, %s items, %s interactions (train %s, valid %s, test %s); features: %s", dataset,
             f"{len(users):,}", f"{len(items):,}", f"{sizes['inter']:,}", f"{sizes['train.inter']:,}",
             f"{sizes['valid.inter']:,}", f"{sizes['test.inter']:,}",
             ", ".join(f"{m} {f['shape'][0]}x{f['shape'][1]}" for m, f in features.items()) or "none")
    log.info("written to %s; config: %s", dest, files[YAML_SUFFIX])
    return ConversionResult(dataset=dataset, path=dest, n_users=int(len(users)), n_items=int(len(items)),
                            n_interactions=sizes["inter"], files=files, stats=stats)


# ----------------------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m dataset_converters import-mmrec`` (also sets the description and epilog)."""
    parser.description = parser.description or DESCRIPTION
    parser.epilog = parser.epilog or EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--inter", required=True, metavar="FILE",
                        help="MMRec's interaction file, e.g. data/baby/baby.inter")
    parser.add_argument("--image-feat", metavar="FILE", help="MMRec's image_feat.npy (row i = itemID i)")
    parser.add_argument("--text-feat", metavar="FILE", help="MMRec's text_feat.npy (row i = itemID i)")
    parser.add_argument("--out", default="dataset", metavar="DIR",
                        help="output root; files go to DIR/NAME/ (default: %(default)s)")
    parser.add_argument("--dataset", metavar="NAME",
                        help="dataset name (default: the .inter file's name without .inter)")
    parser.add_argument("--no-graph", action="store_true", help="do not build the item graph sidecar")
    parser.add_argument("--graph-max-neighbors", type=int, default=50, metavar="K",
                        help="neighbours each item keeps in the item graph (default: %(default)s)")
    parser.add_argument("--keep-cold-start-users", action="store_true",
                        help="keep valid/test rows of users without training rows (MMRec drops them)")


def run(args) -> int:
    """Run ``import-mmrec`` with parsed ``args``; a ConversionError propagates (the CLI prints it, exit 2)."""
    result = import_mmrec(args.inter, out_dir=args.out, dataset=args.dataset, image_feat=args.image_feat,
                          text_feat=args.text_feat, graph=not args.no_graph,
                          graph_max_neighbors=args.graph_max_neighbors,
                          drop_cold_start_users=not args.keep_cold_start_users)
    log.info("run a model on it with: python run_recbole_mm.py --model=LightGCN --dataset=%s --config_files=%s",
             result.dataset, result.files[YAML_SUFFIX])
    return 0


__all__: Sequence[str] = ("import_mmrec", "add_arguments", "run", "default_dataset_name")
