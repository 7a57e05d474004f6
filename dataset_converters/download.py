"""Resumable HTTP(S) download of one large file (the Amazon Reviews raw dumps), standard library only.

``fetch(url, dest)`` writes into ``<dest>.part`` and renames it to ``dest`` only once it is known to be whole:

* the expected size comes from ``Content-Length`` (200) or ``Content-Range`` (206); the ``.part`` file is renamed
  only when its size equals it, so a partial file is never taken for a whole one;
* without any length the body is accepted after a clean end of stream, and a ``.gz`` file only if it decompresses
  to the end of its last gzip member (CRC32 and size checked);
* the first answer's validators (``ETag``, ``Last-Modified``) and total size are kept beside the partial file in
  ``<dest>.part.json`` (written atomically); an existing ``.part`` is resumed with ``Range: bytes=<size>-`` and
  ``If-Range: <validator>``, so a server whose file changed since answers 200 with the whole new file, which
  starts over. A 206 answer is appended only when its validator and total match the kept ones (else the
  ``.part`` file and its ``.json`` are discarded and the download starts over, so old and new bytes are never
  spliced); a 200 answer (a changed file, or a server that ignores ranges) starts over; a 416 answer is accepted
  when the server's total equals the size on disk, or, without a total, for a ``.gz`` file that decompresses to
  its end; any other 416 starts over;
* connection errors, timeouts, 5xx / 408 / 429 answers and connections cut mid-body are retried (``retries``
  times, waiting ``backoff * 2**(n-1)`` seconds, at most ``MAX_BACKOFF``), each retry resuming from the bytes on
  disk; other 4xx answers fail at once;
* when the first attempt cannot reach the host at all (DNS failure, connection refused, network unreachable), one
  quick retry is made and then :class:`NoNetworkError` is raised, without a long retry loop;
* the file is flushed and fsynced before ``os.replace`` puts it in place; on POSIX an exclusive lock on the
  ``.part`` file keeps two processes from writing the same download.

Errors are :class:`DownloadError` with a one-line message naming the URL.
"""

from __future__ import annotations

import errno
import gzip
import http.client
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["DownloadError", "NoNetworkError", "fetch", "fsync_dir", "part_path", "state_path", "unreachable_reason"]

CHUNK_SIZE = 1 << 20
MAX_BACKOFF = 60.0
#: wait before the single retry of an attempt that could not reach the host
QUICK_RETRY_WAIT = 0.2
USER_AGENT = "recbole-mmfusion-download/1.0"
_RETRIED_4XX = {408, 429}
_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


class DownloadError(Exception):
    """A download failed; the message is one line naming the URL."""

    def __init__(self, message: str, url: str):
        super().__init__(" ".join(message.split()))
        self.url = url


class NoNetworkError(DownloadError):
    """The host could not be reached at all (DNS failure, connection refused, network unreachable)."""

    def __init__(self, reason: str, url: str):
        super().__init__(f"cannot reach {url}: {reason}", url)
        self.reason = " ".join(reason.split())


class _Retry(Exception):
    """An attempt ended before the file was complete; retry (resuming from the bytes on disk)."""


def part_path(dest) -> Path:
    """Where :func:`fetch` keeps the bytes of ``dest`` while downloading it."""
    dest = Path(dest)
    return dest.with_suffix(dest.suffix + ".part")


def state_path(dest) -> Path:
    """Where :func:`fetch` keeps the validators (``ETag``, ``Last-Modified``) and total size of ``<dest>.part``."""
    part = part_path(dest)
    return part.with_name(part.name + ".json")


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc or url


def unreachable_reason(exc: BaseException, url: str) -> str | None:
    """Why the host of ``url`` could not be reached at all (DNS failure, connection refused, network
    unreachable), or None for other errors; ``exc`` is what opening ``url`` raised."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve {urllib.parse.urlsplit(url).hostname} ({reason.strerror or reason})"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused by {_host(url)}"
    if isinstance(reason, OSError) and reason.errno in _UNREACHABLE:
        return f"{_host(url)} unreachable ({reason.strerror or reason})"
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed mid-body ({len(exc.partial)} bytes of the chunk read)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes <start>-<end>/<total>`` or ``bytes */<total>`` to (start, total); None where absent or ``*``."""
    if not value:
        return None, None
    unit, _, spec = value.strip().partition(" ")
    if unit.lower() != "bytes":
        return None, None
    span, _, total = spec.partition("/")
    start = span.partition("-")[0].strip()
    return (int(start) if start.isdigit() else None), (int(total) if total.strip().isdigit() else None)


def _content_length(headers) -> int | None:
    value = (headers.get("Content-Length") or "").strip()
    return int(value) if value.isdigit() else None


def gzip_complete(path) -> bool:
    """Whether ``path`` decompresses to the end of its last gzip member without error (CRC32 and size checked)."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(CHUNK_SIZE):
                pass
    except (OSError, EOFError, zlib.error):
        return False
    return True


def _lock(handle) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _validators(headers) -> dict:
    """The validators of an answer: ``{"etag": ..., "last_modified": ...}`` (None where absent)."""
    return {"etag": (headers.get("ETag") or "").strip() or None,
            "last_modified": (headers.get("Last-Modified") or "").strip() or None}


def _same_file(kept: dict, seen: dict, total: int | None) -> bool:
    """Whether an answer (validators ``seen``, size ``total``) is for the file the kept ``.part`` bytes came from."""
    if kept.get("total") is not None and total is not None and kept["total"] != total:
        return False
    if kept.get("etag") and seen["etag"]:
        return kept["etag"] == seen["etag"]
    if kept.get("last_modified") and seen["last_modified"]:
        return kept["last_modified"] == seen["last_modified"]
    return True


class _Download:
    def __init__(self, url: str, dest: Path, handle, timeout: float, bar):
        self.url, self.dest, self.handle, self.timeout, self.bar = url, dest, handle, timeout, bar
        self.part = part_path(dest)
        self.state_file = state_path(dest)
        self.answered = False  # the server answered at least once (so the network is there)

    def _write(self, data: bytes) -> None:
        try:
            self.handle.write(data)
        except OSError as exc:
            raise DownloadError(f"cannot write {self.part}: {exc.strerror or exc}", self.url) from None

    # ------------------------------------------------------------------ what the .part bytes are from

    def _load_state(self) -> dict:
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _save_state(self, validators: dict, total: int | None) -> None:
        """Write ``<dest>.part.json`` atomically (temporary file, fsync, rename)."""
        tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"url": self.url, **validators, "total": total}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_file)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"cannot write {self.state_file}: {exc.strerror or exc}", self.url) from None

    def drop_state(self) -> None:
        self.state_file.unlink(missing_ok=True)

    def _restart(self) -> None:
        """Discard the bytes on disk (and what they were from): the next attempt starts from byte 0."""
        self.handle.seek(0)
        self.handle.truncate(0)
        self.drop_state()

    def _complete_without_length(self) -> bool:
        """Whether a ``.gz`` part file decompresses to its end (never for other files: nothing to check)."""
        self.handle.flush()
        return self.part.name.endswith(".gz.part") and gzip_complete(self.part)

    def attempt(self) -> None:
        """One request; returns when the ``.part`` file holds the whole file, else raises."""
        offset = self.handle.seek(0, os.SEEK_END)
        kept = self._load_state() if offset else {}
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            etag = kept.get("etag")
            validator = etag if etag and not etag.startswith("W/") else kept.get("last_modified")
            if validator:  # a server whose file changed answers 200 with the whole new file
                headers["If-Range"] = validator
        try:
            response = urllib.request.urlopen(urllib.request.Request(self.url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            self.answered = True
            if exc.code != 416 or not offset:
                raise
            _, total = _content_range(exc.headers.get("Content-Range"))
            seen = _validators(exc.headers)
            exc.close()
            if _same_file(kept, seen, total) and (
                    total == offset or (total is None and kept.get("total") in (None, offset)
                                        and self._complete_without_length())):
                return  # the file on disk is already whole
            logger.info("%s: the %d bytes on disk do not match the server's %s; starting over",
                        self.part.name, offset, f"{total} bytes" if total is not None else "file")
            self._restart()
            raise _Retry(f"the partial file ({offset} bytes) does not match the server's "
                         f"({total if total is not None else 'unknown'} bytes)") from None
        self.answered = True
        with response:
            seen = _validators(response.headers)
            if response.status == 206:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset:
                    self._restart()
                    raise _Retry(f"asked for bytes from {offset}, the server sent them from {start}")
                if total is None and _content_length(response.headers) is not None:
                    total = offset + _content_length(response.headers)
                if not _same_file(kept, seen, total):
                    logger.info("%s changed on %s since the %d bytes on disk were downloaded; starting over",
                                self.dest.name, _host(self.url), offset)
                    self._restart()
                    raise _Retry(f"the file changed on the server after {offset} bytes were downloaded")
                if not kept:  # a .part file without its validators: keep this answer's for the next resume
                    self._save_state(seen, total)
                logger.info("Resuming %s at byte %d", self.url, offset)
            else:
                if offset:
                    logger.info("%s sent the whole of %s (changed, or the range request was ignored); "
                                "downloading it again from the start", _host(self.url), self.dest.name)
                    self._restart()
                    offset = 0
                total = _content_length(response.headers)
                self._save_state(seen, total)
            self.bar.reset(total=total)
            self.bar.update(offset)
            size = offset
            while True:
                chunk = response.read(CHUNK_SIZE)
                if not chunk:
                    break
                size += len(chunk)
                if total is not None and size > total:
                    self._restart()
                    raise _Retry(f"the server sent more than the {total} bytes it announced")
                self._write(chunk)
                self.bar.update(len(chunk))
        self.handle.flush()
        if total is None:
            if self.part.name.endswith(".gz.part") and not self._complete_without_length():
                raise _Retry(f"the stream ended after {size} bytes, before the end of the gzip data")
            return
        if size < total:
            raise _Retry(f"connection closed after {size} of {total} bytes")

    def finish(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        os.replace(self.part, self.dest)
        self.drop_state()
        fsync_dir(self.dest.parent)


def fetch(url: str, dest, *, timeout: float = 60.0, retries: int = 5, backoff: float = 1.0,
          progress: bool | None = None) -> Path:
    """Download ``url`` to ``dest`` (resuming ``<dest>.part`` if there is one) and return ``dest``.

    An existing ``dest`` is taken as complete and returned as is.

    Args:
        timeout: seconds to wait for the connection or for the next bytes of the body.
        retries: further attempts after a failed one (each resumes from the bytes on disk).
        backoff: seconds before the first retry, doubled for each next one (at most ``MAX_BACKOFF``).
        progress: show a tqdm bar in bytes; ``None`` shows it only on a terminal.

    Raises:
        NoNetworkError: the host cannot be reached at all (after one quick retry).
        DownloadError: an HTTP error other than 5xx / 408 / 429, or the retries are used up (the ``.part`` file
            is kept for the next call to resume).
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    done = False
    with open(part, "a+b") as handle:
        _lock(handle)
        try:
            if dest.is_file():  # another process finished it while this one waited for the lock
                return dest
            logger.info("Downloading %s to %s", url, dest)
            with tqdm(total=None, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, leave=True,
                      disable=None if progress is None else not progress) as bar:
                job = _Download(url, dest, handle, timeout, bar)
                _run(job, retries, backoff)
            job.finish()
            done = True
        finally:
            if not done:
                _drop_if_empty(part, handle)
    logger.info("Downloaded %s (%d bytes)", dest, dest.stat().st_size)
    return dest


def _drop_if_empty(part: Path, handle) -> None:
    """Remove a ``.part`` file this call created and wrote nothing to (not one another process has opened since)."""
    try:
        mine, there = os.fstat(handle.fileno()), os.stat(part)
    except OSError:
        return
    if mine.st_size == 0 and (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
        part.unlink(missing_ok=True)
        part.with_name(part.name + ".json").unlink(missing_ok=True)


def _run(job: _Download, retries: int, backoff: float) -> None:
    failures = 0
    quick_retry_used = False
    while True:
        try:
            job.attempt()
            return
        except DownloadError:
            raise
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code not in _RETRIED_4XX:
                raise DownloadError(f"HTTP {exc.code} {exc.reason} for {job.url}", job.url) from None
            reason = f"HTTP {exc.code} {exc.reason}"
        except _Retry as exc:
            reason = str(exc)
        except ValueError as exc:  # a URL urllib cannot request
            raise DownloadError(f"cannot download {job.url}: {exc}", job.url) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            unreachable = None if job.answered else unreachable_reason(exc, job.url)
            if unreachable is not None:
                if quick_retry_used:
                    raise NoNetworkError(unreachable, job.url) from None
                quick_retry_used = True
                time.sleep(QUICK_RETRY_WAIT)
                continue
            if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, str):
                raise DownloadError(f"cannot download {job.url}: {exc.reason}", job.url) from None
            reason = _describe(exc)
        failures += 1
        kept = job.handle.seek(0, os.SEEK_END)
        if failures > retries:
            raise DownloadError(
                f"cannot download {job.url}: {reason} (gave up after {retries} retries; "
                f"{kept} bytes kept in {job.part} to resume from)", job.url)
        wait = min(backoff * 2 ** (failures - 1), MAX_BACKOFF)
        logger.warning("Download of %s interrupted (%s); retry %d of %d in %.1f s from byte %d",
                       job.url, reason, failures, retries, wait, kept)
        time.sleep(wait)
