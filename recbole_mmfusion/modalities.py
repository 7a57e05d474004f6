"""Modality sidecars of a converted dataset, aligned to RecBole's internal user and item ids.

The converter writes the sidecars keyed by raw ids (``<ds>.item_text.parquet``, ``<ds>.user_text.parquet``,
``<ds>.item_graph.parquet``, ``images/manifest.jsonl``); RecBole numbers users and items by first appearance with
``[PAD]`` at 0. :func:`load_modality_inputs` joins the two on the raw id, so row ``i`` of every output belongs to
internal id ``i``. Nothing here trains or builds a model: the encoders and the model take these lists and tensors.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)

ALL_MODALITIES = ("text", "image", "graph")


@dataclass
class ModalityInputs:
    """Raw modality inputs of one dataset, row ``i`` = internal id ``i`` (row 0 is ``[PAD]``).

    Shapes:
        - ``item_text``: ``n_items`` strings, ``""`` where an item has none
        - ``user_text``: ``n_users`` strings, ``""`` where a user has none
        - ``item_image_files``: ``n_items`` paths, ``None`` where an item has no stored image
        - ``graph_rowptr``: :math:`(n\\_items + 1)` int64, CSR row pointers over internal item ids
        - ``graph_col`` / ``graph_weight``: :math:`(E)` int64 / float32, both directions of every edge
    """

    n_users: int
    n_items: int
    item_text: list[str]
    user_text: list[str]
    item_image_files: list[Optional[Path]]
    graph_rowptr: torch.LongTensor
    graph_col: torch.LongTensor
    source_digest: str
    graph_weight: Optional[torch.Tensor] = None
    item_ids: list[str] = field(default_factory=list)   # raw item token of each internal id
    user_ids: list[str] = field(default_factory=list)   # raw user token of each internal id
    digests: dict[str, str] = field(default_factory=dict)  # per modality ("text", "image", "graph"), to key caches


def config_value(config, key: str, default=None):
    """``config[key]``, or ``default`` when the key is unset (``None``) or absent (RecBole's Config or a dict)."""
    try:
        value = config[key]
    except KeyError:
        return default
    return default if value is None else value


def name_list(value) -> list[str]:
    """A list of names from a config value: a YAML list, or a string such as ``[text, graph]`` or ``text,graph``
    (what ``--modalities=[text,graph]`` on the command line gives, since RecBole cannot evaluate it)."""
    if isinstance(value, str):
        return [part.strip().strip("'\"") for part in value.strip().strip("[]").split(",") if part.strip()]
    return [str(v) for v in value]


def config_modalities(config) -> set[str]:
    """``config['modalities']`` as a set (every modality when unset); an unknown name is a ``ValueError``."""
    value = config_value(config, "modalities")
    names = set(ALL_MODALITIES if value is None else name_list(value))
    unknown = names - set(ALL_MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; choose among {list(ALL_MODALITIES)}")
    return names


class FeatureFileError(ValueError):
    """A sidecar or feature file that is missing or does not fit the dataset; the message names the file."""


class MissingSidecarError(FeatureFileError, FileNotFoundError):
    """A sidecar a modality needs is not there."""


def _missing_sidecar(path: Path, modality: str) -> MissingSidecarError:
    return MissingSidecarError(
        f"{path} not found: the {modality} modality needs this sidecar. Build it by converting the raw files "
        f"with its sidecars (python -m dataset_converters convert --reviews ... --meta ... --dataset "
        f"{path.parent.name} --out {path.parent.parent}), or leave '{modality}' out of 'modalities'.")


def _file_stamp(path: Path) -> str:
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def _text_column(path: Path, key: str, tokens: np.ndarray, token2id: dict, what: str) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=[key, "text"]).to_pandas()
    ids, texts = table[key].astype(str).tolist(), table["text"].fillna("").astype(str).tolist()
    out = [""] * len(tokens)
    seen, unknown = set(), 0
    for raw, text in zip(ids, texts):
        if raw in seen:
            raise FeatureFileError(f"{path}: {key} {raw!r} appears more than once")
        seen.add(raw)
        index = token2id.get(raw)
        if index is None or index == 0:
            unknown += 1
        else:
            out[index] = text
    missing = sum(1 for raw in tokens[1:] if raw not in seen)
    if unknown:
        logger.info("%s: %d %ss are not in the dataset, ignored", path.name, unknown, what)
    if missing:
        logger.info("%s: %d of %d dataset %ss have no row (no text)", path.name, missing, len(tokens) - 1, what)
    return out


def _image_files(folder: Path, tokens: np.ndarray, token2id: dict) -> list[Optional[Path]]:
    from dataset_converters.images import IMAGES_DIR, MANIFEST, load_manifest

    out: list[Optional[Path]] = [None] * len(tokens)
    if not (folder / IMAGES_DIR / MANIFEST).is_file():
        logger.warning("%s not found: every item is without an image (fetch them with python -m dataset_converters "
                       "images)", folder / IMAGES_DIR / MANIFEST)
        return out
    unknown = absent = 0
    for raw, record in load_manifest(folder).items():
        index = token2id.get(raw)
        if index is None or index == 0:
            unknown += 1
        elif record.get("status") == "ok" and record.get("file"):
            path = folder / IMAGES_DIR / record["file"]
            if path.is_file():
                out[index] = path
            else:
                absent += 1
    if unknown:
        logger.info("image manifest: %d items are not in the dataset, ignored", unknown)
    if absent:
        logger.warning("image manifest: %d items marked ok have no file on disk", absent)
    logger.info("images: %d of %d items have one", sum(p is not None for p in out), len(tokens) - 1)
    return out


def _graph_csr(path: Path, n_items: int, token2id: dict):
    from dataset_converters.graph import read_item_graph

    graph, file_ids = read_item_graph(path)
    to_internal = np.array([token2id.get(raw, -1) for raw in file_ids] + [-1], dtype=np.int64)
    unknown_items = int(np.sum(to_internal[:-1] <= 0))
    src, dst = to_internal[graph.src.astype(np.int64)], to_internal[graph.dst.astype(np.int64)]
    keep = (src > 0) & (dst > 0)
    if unknown_items:
        logger.info("%s: %d items are not in the dataset; %d edge rows to them dropped",
                    path.name, unknown_items, int(np.sum(~keep)))
    src, dst, weight = src[keep], dst[keep], graph.weight[keep].astype(np.float32)
    order = np.argsort(src * max(n_items, 1) + dst, kind="stable")
    src, dst, weight = src[order], dst[order], weight[order]
    rowptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n_items), out=rowptr[1:])
    isolated = int(np.sum(np.diff(rowptr)[1:] == 0))
    logger.info("item graph: %d directed edges, %d of %d items without neighbours", len(dst), isolated, n_items - 1)
    return torch.from_numpy(rowptr), torch.from_numpy(dst), torch.from_numpy(weight)


def load_modality_inputs(config, dataset) -> ModalityInputs:
    """Read the sidecars named by ``config['modalities']`` from ``config['data_path']``, aligned to ``dataset``.

    ``dataset`` is the training RecBole dataset (``train_data._dataset``). Sidecar rows for ids the dataset does
    not hold are ignored; dataset ids a sidecar lacks get ``""``, ``None`` or no edges; both are counted in the log.
    A missing text or graph sidecar is a ``FileNotFoundError`` naming it; missing images are a warning.
    """
    from dataset_converters.graph import item_graph_path
    from dataset_converters.text import item_text_path, user_text_path

    folder, name = Path(config["data_path"]), config["dataset"]
    modalities = config_modalities(config)
    uid, iid = dataset.uid_field, dataset.iid_field
    user_tokens = np.asarray(dataset.field2id_token[uid]).astype(str)
    item_tokens = np.asarray(dataset.field2id_token[iid]).astype(str)
    n_users, n_items = len(user_tokens), len(item_tokens)
    ids_part = _digest("items", *item_tokens.tolist(), "users", *user_tokens.tolist())
    digests = {}

    item_text, user_text = [""] * n_items, [""] * n_users
    # image-text pretraining contrasts images with item text, so the text is read for it too
    wants_text = "text" in modalities or ("image" in modalities and bool(config_value(config, "pretrain_encoders"))
                                          and config_value(config, "feature_mode") != "precomputed")
    if wants_text:
        paths = [item_text_path(folder, name), user_text_path(folder, name)]
        for path in paths:
            if not path.is_file():
                raise _missing_sidecar(path, "text")
        item_text = _text_column(paths[0], "item_id", item_tokens, dataset.field2token_id[iid], "item")
        user_text = _text_column(paths[1], "user_id", user_tokens, dataset.field2token_id[uid], "user")
        digests["text"] = _digest(ids_part, *map(_file_stamp, paths))

    files: list[Optional[Path]] = [None] * n_items
    if "image" in modalities:
        files = _image_files(folder, item_tokens, dataset.field2token_id[iid])
        manifest = folder / "images" / "manifest.jsonl"
        digests["image"] = _digest(ids_part, _file_stamp(manifest) if manifest.is_file() else "no-images")

    rowptr, col, weight = torch.zeros(n_items + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long), None
    if "graph" in modalities:
        path = item_graph_path(folder, name)
        if not path.is_file():
            raise _missing_sidecar(path, "graph")
        rowptr, col, weight = _graph_csr(path, n_items, dataset.field2token_id[iid])
        digests["graph"] = _digest(ids_part, _file_stamp(path))

    stamps = [f"{k}={v}" for k, v in sorted(digests.items())]
    return ModalityInputs(n_users=n_users, n_items=n_items, item_text=item_text, user_text=user_text,
                          item_image_files=files, graph_rowptr=rowptr, graph_col=col,
                          source_digest=_digest(ids_part, *stamps), graph_weight=weight,
                          item_ids=item_tokens.tolist(), user_ids=user_tokens.tolist(), digests=digests)


def history_csr(dataset) -> tuple[torch.LongTensor, torch.LongTensor]:
    """Each internal user's distinct items in ``dataset.inter_feat`` (the training interactions) as CSR.

    Returns ``(rowptr [n_users + 1], items [nnz])``: user ``u``'s items are ``items[rowptr[u]:rowptr[u + 1]]``,
    sorted by item id (time order is not kept).
    """
    users = np.asarray(dataset.inter_feat[dataset.uid_field], dtype=np.int64)
    items = np.asarray(dataset.inter_feat[dataset.iid_field], dtype=np.int64)
    n_users, n_items = dataset.user_num, dataset.item_num
    pairs = np.unique(users * n_items + items)
    users, items = pairs // n_items, pairs % n_items
    rowptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=rowptr[1:])
    return torch.from_numpy(rowptr), torch.from_numpy(items)


def _read_id_map(path: Path) -> list[str]:
    """Raw id of each feature row: one id a line, or a CSV/TSV with an ``itemID`` column giving the row."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0] if lines else ""
    delimiter = "\t" if "\t" in header else "," if "," in header else None
    columns = [c.strip() for c in header.split(delimiter)] if delimiter else []
    if "itemID" not in columns:
        ids = [line.rstrip("\r") for line in lines]
        while ids and not ids[-1].strip():
            ids.pop()
        return ids
    rows = list(csv.DictReader(lines, delimiter=delimiter))
    others = [c for c in columns if c != "itemID"]
    if len(others) != 1:
        raise FeatureFileError(f"{path}: expected itemID and one raw-id column, found {columns}")
    ids: list[Optional[str]] = [None] * len(rows)
    for line, row in enumerate(rows, start=2):
        try:
            index = int(row["itemID"])
        except (TypeError, ValueError):
            raise FeatureFileError(f"{path}:{line}: itemID {row['itemID']!r} is not an integer") from None
        if not 0 <= index < len(rows) or ids[index] is not None:
            raise FeatureFileError(f"{path}:{line}: itemID {index} is out of range or repeated")
        ids[index] = row[others[0]].strip()
    return ids


def load_precomputed(path_npy, item_ids_path, dataset) -> tuple[torch.Tensor, torch.BoolTensor]:
    """Item features from a user's ``.npy`` whose rows are matched to the dataset by raw item id.

    Returns ``(features float32 [n_items, d], mask bool [n_items])``; items without a row are zero and masked.
    """
    if not item_ids_path:
        raise FeatureFileError(f"{path_npy}: precomputed features need precomputed_item_ids, the raw item id of "
                               "each row")
    path_npy, item_ids_path = Path(path_npy), Path(item_ids_path)
    for path in (path_npy, item_ids_path):
        if not path.is_file():
            raise FeatureFileError(f"{path}: no such file")
    try:
        array = np.load(path_npy, mmap_mode="r")
    except ValueError as exc:
        raise FeatureFileError(f"{path_npy}: not a .npy array ({exc})") from None
    if array.ndim != 2:
        raise FeatureFileError(f"{path_npy}: expected a 2-D array [items, dim], got shape {tuple(array.shape)}")
    raw_ids = _read_id_map(item_ids_path)
    if len(raw_ids) != array.shape[0]:
        raise FeatureFileError(f"{path_npy} has {array.shape[0]} rows but {item_ids_path} lists {len(raw_ids)} item ids")
    row_of: dict[str, int] = {}
    for row, raw in enumerate(raw_ids):
        if raw in row_of:
            raise FeatureFileError(f"{item_ids_path}: item id {raw!r} appears twice (rows {row_of[raw]} and {row})")
        row_of[raw] = row
    tokens = np.asarray(dataset.field2id_token[dataset.iid_field]).astype(str)
    internal = [(index, row_of[raw]) for index, raw in enumerate(tokens) if index and raw in row_of]
    feats = np.zeros((len(tokens), array.shape[1]), dtype=np.float32)
    mask = np.zeros(len(tokens), dtype=bool)
    if internal:
        index, rows = map(np.asarray, zip(*internal))
        values = np.asarray(array[np.sort(rows)], dtype=np.float32)[np.argsort(np.argsort(rows))]
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            row = int(rows[np.flatnonzero(bad)[0]])
            raise FeatureFileError(f"{path_npy}: row {row} (item {raw_ids[row]!r}) holds NaN or infinite values")
        feats[index], mask[index] = values, True
    missing = len(tokens) - 1 - int(mask.sum())
    unused = len(raw_ids) - int(mask.sum())
    logger.info("%s: %d of %d items have features (%d without, masked; %d rows for items not in the dataset)",
                path_npy.name, int(mask.sum()), len(tokens) - 1, missing, unused)
    return torch.from_numpy(feats), torch.from_numpy(mask)
