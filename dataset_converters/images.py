"""Item images: download each kept item's main image, check it, and store it as a square JPEG.

``download_images(dataset_dir, meta_paths)`` (command line: ``python -m dataset_converters images
--dataset-dir dataset/<ds> --meta meta.jsonl.gz``) reads the kept item ids of a converted dataset
(first column of ``<ds>.item``, else the item ids of ``<ds>.inter``; every meta item when neither
exists), picks each item's main image in the meta files, fetches it, checks it with Pillow and writes
``<dataset_dir>/images/<file>``: RGB, shorter side resized to ``size`` then centre-cropped to
``size x size`` (default 224), JPEG quality 90.

Main image: 2023 meta, the ``images`` entry whose ``variant`` is ``MAIN`` (else the first), its
``hi_res`` URL, else ``large`` (else ``thumb``); 2018, ``imageURLHighRes[0]``, else ``imageURL[0]``;
2014, ``imUrl``. With ``image_root=DIR`` a local file ``DIR/<item_id>.jpg|.jpeg|.png|.webp`` takes
precedence over the URL. URLs may be ``http://``, ``https://`` or ``file://``; anything else fails
with ``unsupported_scheme``. Downloads use ``workers`` threads, a ``timeout`` per request, up to
``retries`` retries with exponential backoff and jitter on timeouts, connection errors, 5xx, 408 and
429 (never on other 4xx), at most 5 redirects, at most ``max_bytes`` per body and an optional
``rate_limit`` in requests per second over all workers (reasons: :mod:`.image_fetch`). Images
declaring more than ``max_pixels`` pixels are refused before they are decoded.

File names: ``<slug>-<hash>.jpg``, where ``slug`` is the item id with every run of characters
other than ``A-Z a-z 0-9 _ -`` replaced by ``_`` (trimmed, at most 64 characters; omitted when
empty) and ``hash`` the first 12 hex digits of the SHA-256 of the UTF-8 id; e.g. ``B07K8YQ5ZL`` ->
``B07K8YQ5ZL-<hash>.jpg``, ``../../etc/passwd`` -> ``etc_passwd-<hash>.jpg``. Names never hold
``/``, ``..``, NUL or a leading dot, differ for ids that differ only in case, and are the same on
every run (:func:`image_file_name`).

Manifest: ``images/manifest.jsonl``, one JSON object a line; the last line of an item wins
(:func:`load_manifest` returns ``{item_id: record}``). Keys:

==============  ============================================================================
item_id         the item id
status          ``ok`` (image stored), ``missing`` (no image URL in the meta, or no meta
                record, and no local file) or ``failed``
reason          null when ok; missing: ``no_meta`` / ``no_image``; failed: ``http_<code>``,
                ``timeout``, ``connection_error``, ``truncated``, ``too_large``,
                ``too_many_redirects``, ``unsupported_scheme``, ``not_an_image``,
                ``decode_error``, ``too_many_pixels``, ``file_not_found``, ...
url             the source: the image URL, or the ``file://`` URI of the local file
http_status     last HTTP status (null for files and connection failures)
bytes           size of the downloaded body
file            stored file name inside ``images/`` (null unless ok)
file_bytes      size of the stored JPEG
sha256          SHA-256 of the stored JPEG
width, height   size of the source image in pixels (as declared by its header)
size            side of the stored square image
attempts        HTTP attempts made (1 = no retry)
seconds         time spent on the item
time            when the item finished, UTC, ``YYYY-MM-DDTHH:MM:SSZ``
detail          a short error message (null when ok)
reused_file     only on an ``ok`` record made from an image already in ``images/`` (see below):
                ``true``; its ``bytes``, ``width``, ``height`` and ``http_status`` are null
==============  ============================================================================

Crash safety: one line is appended per finished item (flushed at once, fsync'd every 64 lines
and at the end); a torn last line is ignored on replay; images are written to a temporary
``.<name>.*.tmp`` file and renamed, so a killed run leaves no half-written image and no line for
an unfinished item. A re-run keeps every ``ok`` item whose file still exists with the recorded
size (and, with ``verify=True``, SHA-256) and same ``size``; an item without an ``ok`` record
whose file ``images/<image_file_name(item_id)>`` exists (stored just before a kill, its line
never written) is taken as ``ok`` without a download when Pillow reads the file as a whole
``size`` x ``size`` RGB JPEG (``reused_file: true``). It retries failed items, re-checks missing
ones, and finally rewrites the journal with one line per item (atomically). Two runs on the same
folder at once are refused (lock file ``images/.lock``).

Without a network: after ``unreachable_limit`` (20) items in a row whose host could not be
reached at all (DNS failure, connection refused, network unreachable), with no other outcome in
between, the run stops. The items not attempted get no manifest line (a later run tries them),
one warning is logged, and the report has ``aborted_unreachable=True`` and ``not_done`` set.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import io
import json
import logging
import os
import re
import sys
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from PIL import Image

from .download import fsync_dir
from .image_fetch import (DEFAULT_MAX_PIXELS, DEFAULT_SIZE, Fetcher, FetchError, ImageError, Interrupted,
                          read_file, to_jpeg)
from .issues import ConversionError, InputIssues
from .meta import ItemMeta, read_meta
from .records import PathLike, check_inputs

try:  # POSIX: one run per images folder at a time
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger("dataset_converters.images")

__all__ = ["ImageError", "ImageReport", "add_arguments", "download_images", "image_file_name",
           "kept_item_ids", "load_manifest", "main_from_args", "main_image_url", "to_jpeg"]

IMAGES_DIR = "images"
MANIFEST = "manifest.jsonl"
DEFAULT_WORKERS = 8
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
LOCAL_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # in order of precedence
FSYNC_EVERY = 64
UNREACHABLE_LIMIT = 20  # items in a row whose host could not be reached before the run stops
STATUSES = ("ok", "missing", "failed")
RECORD_KEYS = ("item_id", "status", "reason", "url", "http_status", "bytes", "file", "file_bytes", "sha256",
               "width", "height", "size", "attempts", "seconds", "time", "detail")
_SLUG_BAD = re.compile(r"[^A-Za-z0-9_-]+")


# --------------------------------------------------------------------------- choosing and naming


def main_image_url(meta: Optional[ItemMeta]) -> Optional[str]:
    """The URL of an item's main image, or None (see the module docstring for the rule per schema)."""
    if meta is None or not meta.images:
        return None
    images = meta.images
    if meta.schema == "2018":  # entries pair imageURL[i] (as thumb) with imageURLHighRes[i] (as hi_res)
        order = ("hi_res", "thumb", "large")
        return next((img[k] for k in order for img in images if img.get(k)), None)
    main = next((img for img in images if img.get("variant") == "MAIN"), images[0])
    return main.get("hi_res") or main.get("large") or main.get("thumb") or None


def image_file_name(item_id: str) -> str:
    """A safe, deterministic file name for ``item_id`` (``<slug>-<12 hex>.jpg``)."""
    digest = hashlib.sha256(item_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    slug = _SLUG_BAD.sub("_", item_id).strip("_-")[:64].strip("_-")
    return f"{slug}-{digest}.jpg" if slug else f"{digest}.jpg"


# --------------------------------------------------------------------------- manifest journal


def _read_journal(path: Path) -> Tuple[Dict[str, dict], int, Optional[int]]:
    """``(last record per item, complete lines, offset of a torn tail or None)``."""
    records: Dict[str, dict] = {}
    lines = 0
    offset = 0
    torn = None
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return records, 0, None
    with f:
        for raw in f:
            if not raw.endswith(b"\n"):
                torn = offset
                break
            offset += len(raw)
            lines += 1
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("item_id"), str) and rec.get("status") in STATUSES:
                records[rec["item_id"]] = rec
    return records, lines, torn


def load_manifest(dataset_dir: PathLike) -> Dict[str, dict]:
    """``{item_id: record}`` from ``<dataset_dir>/images/manifest.jsonl`` (empty if there is none).

    A stored image is ``<dataset_dir>/images/<record["file"]>`` when ``record["status"] == "ok"``.
    """
    return _read_journal(Path(dataset_dir) / IMAGES_DIR / MANIFEST)[0]


class _Journal:
    """Append-only ``manifest.jsonl``, written by one thread."""

    def __init__(self, path: Path):
        self.path = path
        self.records, self.lines, torn = _read_journal(path)
        if torn is not None:  # a line cut by a crash: drop it so the next line starts clean
            log.warning("images: dropping a torn last line of %s", path)
            with open(path, "r+b") as f:
                f.truncate(torn)
        self._f = open(path, "ab", buffering=0)
        self._unsynced = 0

    def append(self, rec: dict) -> None:
        self._f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass"))
        self.records[rec["item_id"]] = rec
        self.lines += 1
        self._unsynced += 1
        if self._unsynced >= FSYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        if self._unsynced:
            os.fsync(self._f.fileno())
            self._unsynced = 0

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()

    def compact(self) -> None:
        """Rewrite the journal with one line per item (temp file + rename)."""
        if self.lines <= len(self.records):
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            for rec in self.records.values():
                f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        self.lines = len(self.records)


# --------------------------------------------------------------------------- inputs


def _unquote(cell: str) -> str:
    if len(cell) >= 2 and cell[0] == '"' and cell[-1] == '"':
        return cell[1:-1].replace('""', '"')
    return cell


def _id_column(path: Path) -> List[str]:
    """The unique values of the ``item_id`` column (cells never hold tabs; ``"`` cells are CSV-quoted)."""
    with open(path, encoding="utf-8", newline="\n") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        names = [h.split(":", 1)[0].strip() for h in header]
        if "item_id" not in names:
            raise ConversionError(f"{path} has no item_id column (header: {' '.join(header)[:200]})")
        col = names.index("item_id")
        ids: Dict[str, None] = {}
        for line in f:
            cells = line.rstrip("\r\n").split("\t")
            if len(cells) > col and cells[col]:
                ids[_unquote(cells[col])] = None
        return list(ids)


def kept_item_ids(dataset_dir: PathLike) -> Optional[List[str]]:
    """Item ids of a converted dataset folder (``<ds>.item``, else ``<ds>.inter``), or None if it has neither."""
    d = Path(dataset_dir)
    for suffix in ("item", "inter"):
        path = d / f"{d.name}.{suffix}"
        if not path.is_file():
            found = [p for p in sorted(d.glob(f"*.{suffix}"))
                     if p.is_file() and not p.name.endswith((".train.inter", ".valid.inter", ".test.inter"))]
            if len(found) != 1:
                continue
            path = found[0]
        return _id_column(path)
    return None


def _main_urls(meta_paths: Sequence[Path], wanted: Optional[set], progress: bool) -> Dict[str, Optional[str]]:
    """``{item_id: main image URL or None}`` for every (wanted) item found in the meta files; first record wins."""
    out: Dict[str, Optional[str]] = {}
    if not meta_paths:
        return out
    issues = InputIssues(label="meta records")
    for m in read_meta(meta_paths, issues, progress=progress):
        if m.item_id in out or (wanted is not None and m.item_id not in wanted):
            continue
        out[m.item_id] = main_image_url(m)
    if issues.total:
        log.info("images: %s meta records skipped (%s)", f"{issues.total:,}", issues.summary())
    return out


def _local_files(image_root: Optional[Path]) -> Dict[str, Path]:
    """``{stem: path}`` for the image files directly inside ``image_root`` (suffix case ignored)."""
    if image_root is None:
        return {}
    rank = {s: i for i, s in enumerate(LOCAL_SUFFIXES)}
    best: Dict[str, Tuple[int, Path]] = {}
    with os.scandir(image_root) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            r = rank.get(suffix.lower())
            if r is not None and stem and (stem not in best or r < best[stem][0]) and entry.is_file():
                best[stem] = (r, Path(entry.path))
    return {stem: p for stem, (_, p) in best.items()}


# --------------------------------------------------------------------------- the stage


@dataclass
class ImageReport:
    """What :func:`download_images` did; ``counts`` and ``reasons`` describe the final state of every item."""

    images_dir: Path
    manifest: Path
    total: int
    counts: Dict[str, int]          # ok / missing / failed
    reasons: Dict[str, int]         # missing and failure reasons -> items
    downloaded: int                 # items stored by this run
    reused: int                     # ok items kept from an earlier run
    seconds: float
    images_per_s: float             # downloaded / seconds
    failed_items: List[str] = field(default_factory=list)
    aborted_unreachable: bool = False  # stopped early: host after host could not be reached
    not_done: int = 0               # items left without an outcome by this run (not in ``counts``)

    @property
    def ok(self) -> int:
        return self.counts.get("ok", 0)

    @property
    def missing(self) -> int:
        return self.counts.get("missing", 0)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record(item_id: str, status: str, reason: Optional[str] = None, **values) -> dict:
    rec = dict.fromkeys(RECORD_KEYS)
    rec.update(item_id=item_id, status=status, reason=reason, time=_now(), **values)
    return rec


def _stored_file(path: Path, size: int) -> Optional[Tuple[int, str]]:
    """``(bytes, sha256)`` of ``path`` when Pillow reads it as a whole ``size`` x ``size`` RGB JPEG, else None."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG" or im.mode != "RGB" or im.size != (size, size):
                return None
            im.load()
    except Exception:  # noqa: BLE001 - any unreadable file is simply downloaded again
        return None
    return len(data), hashlib.sha256(data).hexdigest()


def _reusable(rec: Optional[dict], images_dir: Path, size: int, verify: bool) -> bool:
    if not rec or rec.get("status") != "ok" or rec.get("size") != size or not isinstance(rec.get("file"), str):
        return False
    name = rec["file"]
    if name != os.path.basename(name) or name.startswith(".") or "\x00" in name:
        return False
    path = images_dir / name
    try:
        if path.stat().st_size != rec.get("file_bytes"):
            return False
        return not verify or hashlib.sha256(path.read_bytes()).hexdigest() == rec.get("sha256")
    except OSError:
        return False


class _Worker:
    """Fetches, checks and stores one item (runs in the pool threads)."""

    def __init__(self, images_dir: Path, fetcher: Fetcher, size: int, max_pixels: int):
        self.images_dir = images_dir
        self.fetcher = fetcher
        self.size = size
        self.max_pixels = max_pixels

    def __call__(self, job: Tuple[str, Optional[str], Optional[Path]]) -> Optional[Tuple[dict, Optional[str]]]:
        """``(record, why the host could not be reached or None)``; None when the run is stopping."""
        item_id, url, local = job
        t0 = time.monotonic()
        info = dict(url=local.resolve().as_uri() if local is not None else url, size=self.size, attempts=0)
        unreachable = None
        try:
            if local is not None:
                body, info["attempts"] = read_file(local, self.fetcher.max_bytes), 1
            else:
                got = self.fetcher.fetch(url)
                body = got.body
                info.update(http_status=got.http_status, attempts=got.attempts)
            info["bytes"] = len(body)
            jpeg, (info["width"], info["height"]) = to_jpeg(body, self.size, self.max_pixels)
            name = image_file_name(item_id)
            self._store(name, jpeg)
            return _record(item_id, "ok", file=name, file_bytes=len(jpeg), sha256=hashlib.sha256(jpeg).hexdigest(),
                           seconds=round(time.monotonic() - t0, 4), **info), None
        except Interrupted:
            return None
        except FetchError as e:
            info.update(http_status=e.http_status, attempts=e.attempts)
            reason, detail, unreachable = e.reason, e.detail, e.unreachable
            if local is None and e.url and e.url != url:  # failed after a redirect
                detail = f"{detail} (at {e.url[:200]})"
        except ImageError as e:
            reason, detail = e.reason, e.detail
        except Exception as e:  # noqa: BLE001 - one bad item never stops the run
            log.debug("images: unexpected error on %r", item_id, exc_info=True)
            reason, detail = "error", f"{type(e).__name__}: {e}"[:200]
        return _record(item_id, "failed", reason, detail=detail or None, seconds=round(time.monotonic() - t0, 4),
                       **info), unreachable

    def _store(self, name: str, data: bytes) -> None:
        final = self.images_dir / name
        tmp = self.images_dir / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _lock(images_dir: Path):
    if fcntl is None:
        return None
    f = open(images_dir / ".lock", "a+b")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ConversionError(f"another image download is running on {images_dir}") from None
    return f


def download_images(dataset_dir: PathLike, meta_paths: Union[PathLike, Iterable[PathLike], None] = None, *,
                    items: Optional[Iterable[str]] = None, image_root: Optional[PathLike] = None,
                    size: int = DEFAULT_SIZE, workers: int = DEFAULT_WORKERS, timeout: float = 10.0,
                    retries: int = 3, backoff: float = 0.5, max_bytes: int = DEFAULT_MAX_BYTES,
                    max_pixels: int = DEFAULT_MAX_PIXELS, rate_limit: Optional[float] = None,
                    verify: bool = False, compact: bool = True, progress: bool = True,
                    unreachable_limit: Optional[int] = UNREACHABLE_LIMIT) -> ImageReport:
    """Fetch, check and store the main image of every item; see the module docstring.

    ``items`` overrides the dataset's kept item ids. ``verify`` re-hashes stored images before
    trusting them (otherwise existence and size are checked). ``unreachable_limit``: items in a row
    whose host cannot be reached before the run stops (None: never stop). Raises ConversionError for
    a missing folder or file, ValueError for a bad setting; a failing item never raises.
    """
    if size < 1 or workers < 1 or max_pixels < 1:
        raise ValueError("need size >= 1, workers >= 1 and max_pixels >= 1")
    if unreachable_limit is not None and unreachable_limit < 1:
        raise ValueError(f"unreachable_limit must be >= 1 or None, got {unreachable_limit}")
    if rate_limit is not None and not rate_limit > 0:
        raise ValueError(f"rate_limit must be > 0, got {rate_limit}")
    start = time.perf_counter()
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise ConversionError(f"dataset folder not found: {dataset_dir}")
    metas = check_inputs(meta_paths, "meta")
    root = Path(image_root) if image_root is not None else None
    if root is not None and not root.is_dir():
        raise ConversionError(f"image root folder not found: {root}")
    fetcher = Fetcher(timeout=timeout, retries=retries, backoff=backoff, max_bytes=max_bytes,
                      rate_limit=rate_limit)

    ids = list(dict.fromkeys(items)) if items is not None else kept_item_ids(dataset_dir)
    urls = _main_urls(metas, set(ids) if ids is not None else None, progress)
    if ids is None:
        if not metas:
            raise ConversionError(f"{dataset_dir} has no {dataset_dir.name}.item or .inter file and no meta "
                                  f"file was given: no items to fetch images for")
        log.info("images: no .item or .inter file in %s; taking every item of the meta files", dataset_dir)
        ids = list(urls)
    local = _local_files(root)

    images_dir = dataset_dir / IMAGES_DIR
    images_dir.mkdir(exist_ok=True)
    lock = _lock(images_dir)
    try:
        for stale in images_dir.glob(".*.tmp"):  # left by a killed run
            stale.unlink(missing_ok=True)
        journal = _Journal(images_dir / MANIFEST)
        try:
            report = _run(ids, urls, local, journal, images_dir, fetcher, size, workers, max_pixels, verify,
                          progress, start, unreachable_limit)
            if compact:
                journal.close()
                journal.compact()
        finally:
            journal.close()
    finally:
        if lock is not None:
            lock.close()
    _log_report(report)
    return report


def _run(ids, urls, local, journal: _Journal, images_dir, fetcher, size, workers, max_pixels, verify,
         progress, start, unreachable_limit: Optional[int] = UNREACHABLE_LIMIT) -> ImageReport:
    from tqdm.auto import tqdm

    counts: Counter = Counter()
    reasons: Counter = Counter()
    prev = journal.records
    jobs = []
    reused = 0
    status: Dict[str, str] = {}  # item -> status recorded by this run
    bar = tqdm(total=len(ids), desc="images", unit="img", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)

    def finish(rec: dict, write: bool = True) -> None:
        if write:
            journal.append(rec)
        status[rec["item_id"]] = rec["status"]
        counts[rec["status"]] += 1
        if rec["status"] != "ok":
            reasons[rec["reason"] or "unknown"] += 1
        bar.update(1)
        bar.set_postfix(ok=counts["ok"], missing=counts["missing"], failed=counts["failed"], refresh=False)

    for item_id in ids:
        old = prev.get(item_id)
        if _reusable(old, images_dir, size, verify):
            reused += 1
            finish(old, write=False)
            continue
        path = local.get(item_id)
        url = urls.get(item_id)
        if path is None and not url:
            rec = _record(item_id, "missing", "no_image" if item_id in urls else "no_meta")
            same = old is not None and all(old.get(k) == rec[k] for k in ("status", "reason", "url"))
            finish(old if same else rec, write=not same)
            continue
        if old is None or old.get("status") != "ok":
            # stored by a run killed before it wrote the item's line: keep the file if it is a whole image
            name = image_file_name(item_id)
            stored = _stored_file(images_dir / name, size) if (images_dir / name).is_file() else None
            if stored is not None:
                reused += 1
                finish(_record(item_id, "ok", url=path.resolve().as_uri() if path is not None else url, file=name,
                               file_bytes=stored[0], sha256=stored[1], size=size, attempts=0, seconds=0.0,
                               reused_file=True))
                continue
        jobs.append((item_id, url, path))

    # Local files first: they need no network, so a run that stops early on an unreachable host still
    # stores every image it can reach on disk.
    jobs.sort(key=lambda job: not (job[2] is not None or str(job[1] or "").startswith("file:")))
    stop = fetcher.stop
    worker = _Worker(images_dir, fetcher, size, max_pixels)
    window = max(2 * workers, 4)
    pending = set()
    todo = iter(jobs)
    streak, last_unreachable, aborted = 0, None, False
    submitted: Dict[object, int] = {}  # future -> submission number
    sequence = itertools.count()

    def finished(fut) -> bool:
        return fut.done() and not fut.cancelled() and fut.exception() is None and fut.result() is not None

    try:
        with warnings.catch_warnings():
            # Pixel counts are checked against max_pixels before decoding; Pillow's own warning adds nothing.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="images") as pool:
                stopped = []

                def stop_pool() -> None:
                    if stopped:
                        return
                    stopped.append(True)
                    stop.set()
                    for fut in pending:
                        fut.cancel()
                    pool.shutdown(wait=True)
                    for fut in pending:  # record what finished while stopping
                        if finished(fut):
                            finish(fut.result()[0])

                try:
                    while not aborted:
                        while len(pending) < window:
                            job = next(todo, None)
                            if job is None:
                                break
                            fut = pool.submit(worker, job)
                            submitted[fut] = next(sequence)
                            pending.add(fut)
                        if not pending:
                            break
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        # in submission order, so "in a row" means consecutive items, not a set's iteration order
                        for fut in sorted(done, key=submitted.pop):
                            result = fut.result()
                            if result is None:
                                continue
                            rec, unreachable = result
                            finish(rec)
                            streak = streak + 1 if unreachable else 0
                            last_unreachable = unreachable or last_unreachable
                            if unreachable_limit is not None and streak >= unreachable_limit:
                                aborted = True
                    if aborted:
                        stop_pool()
                except BaseException:
                    stop_pool()
                    raise
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    downloaded = sum(1 for j in jobs if status.get(j[0]) == "ok")
    failed_items = [j[0] for j in jobs if status.get(j[0]) == "failed"]
    not_done = len(ids) - len(status)
    if aborted:
        log.warning("images: stopped after %d items in a row could not reach their host (last: %s); "
                    "%s items not attempted are left for a later run", streak, last_unreachable, f"{not_done:,}")
    return ImageReport(images_dir=images_dir, manifest=journal.path, total=len(ids),
                       counts={s: counts.get(s, 0) for s in STATUSES}, reasons=dict(reasons.most_common()),
                       downloaded=downloaded, reused=reused, seconds=seconds,
                       images_per_s=downloaded / seconds if seconds > 0 else 0.0, failed_items=failed_items,
                       aborted_unreachable=aborted, not_done=not_done)


def _log_report(r: ImageReport) -> None:
    log.info("images: %s items -> %s ok (%s new, %s already stored), %s missing, %s failed in %.1f s (%.1f images/s)",
             f"{r.total:,}", f"{r.ok:,}", f"{r.downloaded:,}", f"{r.reused:,}", f"{r.missing:,}", f"{r.failed:,}",
             r.seconds, r.images_per_s)
    for status in ("missing", "failed"):
        if r.counts.get(status):
            mine = ("no_meta", "no_image")
            parts = [f"{k} {v:,}" for k, v in r.reasons.items() if (k in mine) == (status == "missing")]
            log.info("images: %s: %s", status, ", ".join(parts))
    log.info("images: manifest %s", r.manifest)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``images`` options to ``parser`` (the subcommand's parser)."""
    p = parser
    p.add_argument("--dataset-dir", required=True, metavar="DIR",
                   help="a converted dataset folder (holding <name>.item or <name>.inter); images go to DIR/images/")
    p.add_argument("--meta", nargs="+", action="extend", metavar="FILE",
                   help="item meta files (2014, 2018 or 2023 schema) giving the image URLs")
    p.add_argument("--image-root", metavar="DIR",
                   help="folder of local images named <item_id>.jpg|.jpeg|.png|.webp, used before any URL")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, metavar="PX",
                   help="side of the stored square JPEGs (default: %(default)s)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help="concurrent downloads (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds without data before a request fails (default: %(default)s)")
    p.add_argument("--retries", type=int, default=3, metavar="N",
                   help="retries after a timeout, connection error, 5xx, 408 or 429 (default: %(default)s)")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="B",
                   help="largest image body accepted (default: %(default)s)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="largest image accepted, width x height, checked before decoding (default: %(default)s)")
    p.add_argument("--rate-limit", type=float, default=None, metavar="R",
                   help="at most R requests per second over all workers (default: no limit)")
    p.add_argument("--verify", action="store_true",
                   help="re-hash stored images before keeping them (default: existence and size are checked)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    return parser


def main_from_args(args: argparse.Namespace) -> int:
    """Run the stage from parsed :func:`add_arguments` options: 0, or 2 after ``error: ...`` on stderr."""
    try:
        download_images(args.dataset_dir, args.meta, image_root=args.image_root, size=args.size,
                        workers=args.workers, timeout=args.timeout, retries=args.retries, max_bytes=args.max_bytes,
                        max_pixels=args.max_pixels, rate_limit=args.rate_limit, verify=args.verify,
                        progress=not args.no_progress)
    except (ConversionError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
