"""One image for :mod:`dataset_converters.images`: fetch its body, check it, make the stored JPEG.

``http://`` and ``https://`` URLs go through :mod:`urllib.request` (so the usual
``http_proxy`` / ``https_proxy`` variables apply) with redirects followed here,
not by urllib, so that their number and target scheme are checked; ``file://``
URLs and local files are read directly. Every read stops past ``max_bytes``.

Fetch failures raise :class:`FetchError` with a short ``reason`` (the manifest's ``reason``
column); those marked (retried) are tried again, up to ``retries`` times:

* ``timeout`` (retried): no data for ``timeout`` seconds, or one attempt longer than
  ``ATTEMPT_TIMEOUT_FACTOR`` x ``timeout`` in all;
* ``connection_error`` (retried): refused, reset, DNS failure, malformed response; when the host
  could not be reached at all (DNS failure, connection refused, network unreachable, as classified by
  :func:`.download.unreachable_reason`) the error's ``unreachable`` says why;
* ``truncated`` (retried): the connection closed before Content-Length bytes came;
* ``http_<code>``, e.g. ``http_404``: status >= 400 (retried for 5xx, 408 and 429), or a
  status other than 2xx and redirects;
* ``too_many_redirects``: more than ``max_redirects`` (5) redirects, e.g. a loop;
* ``too_large``: a body or file over ``max_bytes`` (the read stops there);
* ``unsupported_scheme``: not http, https or file, including a redirect to such a URL;
* ``bad_url``, ``ssl_error`` (certificate check failed);
* ``file_not_found``, ``not_a_file`` (a folder, device or FIFO), ``file_error``.

Retries wait ``backoff * 2**(attempt-1)`` seconds (capped at ``MAX_BACKOFF``) times a random
factor in [0.5, 1.5), or longer when a 429/503 response sends a ``Retry-After`` of at most
``MAX_BACKOFF`` seconds.

:func:`to_jpeg` checks and converts a body, raising :class:`ImageError`: ``not_an_image``
(not decodable as an image), ``truncated`` (image data cut short), ``decode_error`` (corrupt
image data) or ``too_many_pixels`` (the header declares more than ``max_pixels``; refused
before decoding, as is anything Pillow flags as a decompression bomb).
"""

from __future__ import annotations

import http.client
import io
import os
import random
import socket
import ssl
import stat
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple
from urllib.parse import quote, unquote, urljoin, urlsplit

from PIL import Image, ImageOps, UnidentifiedImageError

from .download import unreachable_reason

USER_AGENT = "recbole-mmfusion-image-fetch/0.1 (+python-urllib)"
ACCEPT = "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.5"
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
RETRY_STATUSES = (408, 429)  # client errors that are worth another try; all 5xx are retried too
ATTEMPT_TIMEOUT_FACTOR = 6   # one attempt may take at most this many times ``timeout`` in total
MAX_BACKOFF = 30.0
CHUNK = 64 * 1024
DEFAULT_SIZE = 224
DEFAULT_MAX_PIXELS = 40_000_000
JPEG_QUALITY = 90


class FetchError(Exception):
    """A body could not be fetched; ``reason`` is one short token (see the module docstring).

    ``unreachable`` is set (to a short explanation) when the host could not be reached at all.
    """

    def __init__(self, reason: str, detail: str = "", *, http_status: Optional[int] = None,
                 retry: bool = False, retry_after: Optional[float] = None, url: Optional[str] = None,
                 unreachable: Optional[str] = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.http_status = http_status
        self.retry = retry
        self.retry_after = retry_after
        self.url = url
        self.unreachable = unreachable
        self.attempts = 1


class Interrupted(Exception):
    """The run is stopping; the item must not be recorded."""


@dataclass
class Fetched:
    body: bytes
    url: str                    # the URL finally read (after redirects)
    http_status: Optional[int]  # None for files
    attempts: int


class RateLimiter:
    """At most ``rate`` acquisitions per second over all threads, evenly spaced."""

    def __init__(self, rate: float):
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, stop: Optional[threading.Event] = None) -> None:
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self.interval
        delay = at - now
        if delay > 0:
            if stop is not None:
                if stop.wait(delay):
                    raise Interrupted()
            else:
                time.sleep(delay)


class _PassThrough(urllib.request.HTTPErrorProcessor):
    """Hand every response back as is: redirects and error statuses are handled by :class:`Fetcher`."""

    def http_response(self, request, response):
        return response

    https_response = http_response


def _safe_url(url: str) -> str:
    """Percent-encode spaces and non-ASCII characters, which http.client refuses in a request line."""
    if url.isascii() and " " not in url and all(c.isprintable() for c in url):
        return url
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: fall back to the usual backoff
    return seconds if 0 <= seconds <= MAX_BACKOFF else None


def _classify(exc: BaseException, url: str) -> FetchError:
    """Map an exception raised while requesting ``url`` to a :class:`FetchError`."""
    if isinstance(exc, FetchError):
        return exc
    inner = exc.reason if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException) else exc
    detail = f"{type(inner).__name__}: {inner}"[:200]
    if isinstance(inner, (TimeoutError, socket.timeout)):
        return FetchError("timeout", detail, retry=True, url=url)
    if isinstance(inner, ssl.SSLCertVerificationError):
        return FetchError("ssl_error", detail, url=url)
    if isinstance(inner, http.client.IncompleteRead):
        return FetchError("truncated", detail, retry=True, url=url)
    if isinstance(inner, (http.client.InvalidURL, ValueError)):
        return FetchError("bad_url", detail, url=url)
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, BaseException):
        # e.g. "no host given", "unknown url type"
        return FetchError("bad_url", f"{exc.reason}"[:200], url=url)
    return FetchError("connection_error", detail, retry=True, url=url, unreachable=unreachable_reason(exc, url))


def file_url_path(url: str) -> Path:
    """The local path of a ``file://`` URL (``file:///x`` or ``file://localhost/x``)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchError("unsupported_scheme", f"file URL on another host: {parts.netloc}", url=url)
    return Path(urllib.request.url2pathname(unquote(parts.path)))


def read_file(path, max_bytes: int) -> bytes:
    """A regular file's bytes, refusing folders, devices, FIFOs and files over ``max_bytes``."""
    path = Path(path)
    src = path.as_uri() if path.is_absolute() else str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FetchError("file_not_found", str(path), url=src) from None
    except (OSError, ValueError) as e:  # ValueError: NUL in the path
        raise FetchError("file_error", f"{type(e).__name__}: {e}"[:200], url=src) from None
    if not stat.S_ISREG(st.st_mode):
        raise FetchError("not_a_file", str(path), url=src)
    if st.st_size > max_bytes:
        raise FetchError("too_large", f"{st.st_size} bytes > {max_bytes}", url=src)
    try:
        with open(path, "rb") as f:
            body = f.read(max_bytes + 1)
    except OSError as e:
        raise FetchError("file_error", f"{type(e).__name__}: {e}"[:200], url=src) from None
    if len(body) > max_bytes:
        raise FetchError("too_large", f"more than {max_bytes} bytes", url=src)
    return body


class Fetcher:
    """Fetches URLs with retries, exponential backoff with jitter, redirect and size limits.

    Thread-safe: one instance serves every worker.
    """

    def __init__(self, *, timeout: float = 10.0, retries: int = 3, backoff: float = 0.5,
                 max_bytes: int = 20 * 1024 * 1024, max_redirects: int = 5, rate_limit: Optional[float] = None,
                 user_agent: str = USER_AGENT, stop: Optional[threading.Event] = None):
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if retries < 0 or backoff < 0 or max_bytes < 1 or max_redirects < 0:
            raise ValueError("need retries >= 0, backoff >= 0, max_bytes >= 1 and max_redirects >= 0")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_bytes = int(max_bytes)
        self.max_redirects = int(max_redirects)
        self.limiter = RateLimiter(rate_limit) if rate_limit else None
        self.user_agent = user_agent
        self.stop = stop or threading.Event()
        self._opener = urllib.request.build_opener(_PassThrough())

    # ------------------------------------------------------------------ public

    def fetch(self, url: str) -> Fetched:
        """The body at ``url`` (http, https or file); raises :class:`FetchError` after the last attempt."""
        scheme = urlsplit(url).scheme.lower()
        if scheme == "file":
            return Fetched(read_file(file_url_path(url), self.max_bytes), url, None, 1)
        if scheme not in ("http", "https"):
            raise FetchError("unsupported_scheme", f"scheme {scheme!r}" if scheme else "no scheme", url=url)
        url = _safe_url(url)
        attempt = 0
        while True:
            attempt += 1
            if self.stop.is_set():
                raise Interrupted()
            try:
                body, status, final = self._get(url)
                return Fetched(body, final, status, attempt)
            except FetchError as e:
                e.attempts = attempt
                if not e.retry or attempt > self.retries:
                    raise
                delay = min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                if e.retry_after is not None:
                    delay = max(delay, e.retry_after)
                if self.stop.wait(delay):
                    raise Interrupted() from None

    # ------------------------------------------------------------------ one attempt

    def _get(self, url: str) -> Tuple[bytes, int, str]:
        """One attempt, following redirects: ``(body, status, final_url)``."""
        deadline = time.monotonic() + ATTEMPT_TIMEOUT_FACTOR * self.timeout
        current = url
        for _hop in range(self.max_redirects + 1):
            if self.limiter is not None:
                self.limiter.acquire(self.stop)
            request = urllib.request.Request(current, headers={"User-Agent": self.user_agent, "Accept": ACCEPT})
            try:
                response = self._opener.open(request, timeout=self.timeout)
            except Exception as e:  # noqa: BLE001 - classified into a FetchError
                raise _classify(e, current) from None
            try:
                status = response.status
                if status in REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise FetchError(f"http_{status}", "redirect without Location", http_status=status,
                                         url=current)
                    target = _safe_url(urljoin(current, location.strip()))
                    if urlsplit(target).scheme.lower() not in ("http", "https"):
                        raise FetchError("unsupported_scheme", f"redirect to {target[:200]}", http_status=status,
                                         url=current)
                    current = target
                    continue
                if status >= 400:
                    raise FetchError(f"http_{status}", str(response.reason)[:200], http_status=status,
                                     retry=status >= 500 or status in RETRY_STATUSES,
                                     retry_after=_retry_after(response.headers.get("Retry-After")), url=current)
                if not 200 <= status < 300:
                    raise FetchError(f"http_{status}", str(response.reason)[:200], http_status=status, url=current)
                return self._read_body(response, current, deadline), status, current
            except (FetchError, Interrupted):
                raise
            except Exception as e:  # noqa: BLE001 - a read that failed half-way
                raise _classify(e, current) from None
            finally:
                response.close()
        raise FetchError("too_many_redirects", f"more than {self.max_redirects}", url=url)

    def _read_body(self, response, url: str, deadline: float) -> bytes:
        status = response.status
        declared = None
        length = response.headers.get("Content-Length")
        if length is not None:
            try:
                declared = int(length.strip())
            except ValueError:
                declared = None
        if declared is not None and declared > self.max_bytes:
            raise FetchError("too_large", f"Content-Length {declared} > {self.max_bytes}", http_status=status,
                             url=url)
        chunks = []
        total = 0
        while True:
            if time.monotonic() > deadline:
                raise FetchError("timeout", f"attempt longer than {ATTEMPT_TIMEOUT_FACTOR * self.timeout:g} s",
                                 http_status=status, retry=True, url=url)
            if self.stop.is_set():
                raise Interrupted()
            chunk = response.read(CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > self.max_bytes:
                raise FetchError("too_large", f"more than {self.max_bytes} bytes", http_status=status, url=url)
            chunks.append(chunk)
        if declared is not None and total < declared:
            raise FetchError("truncated", f"{total} of {declared} bytes", http_status=status, retry=True, url=url)
        return b"".join(chunks)


# --------------------------------------------------------------------------- image checks


class ImageError(Exception):
    """A body that cannot become a stored image; ``reason`` is the manifest reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _flatten(im: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white."""
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return im if im.mode == "RGB" else im.convert("RGB")


def to_jpeg(body: bytes, size: int = DEFAULT_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS,
            quality: int = JPEG_QUALITY) -> Tuple[bytes, Tuple[int, int]]:
    """Check and convert an image body: ``(JPEG bytes of size x size RGB, (source width, height))``.

    Raises :class:`ImageError` (``not_an_image``, ``too_many_pixels``, ``truncated`` or
    ``decode_error``). The declared size is checked before any pixel is decoded.
    """
    if not body:
        raise ImageError("not_an_image", "empty body")
    try:
        im = Image.open(io.BytesIO(body))
    except Image.DecompressionBombError as e:
        raise ImageError("too_many_pixels", str(e)[:200]) from None
    except UnidentifiedImageError:
        raise ImageError("not_an_image", f"unrecognised data starting {body[:16]!r}") from None
    except Exception as e:  # noqa: BLE001 - a broken header
        reason = "truncated" if "truncated" in str(e).lower() or isinstance(e, EOFError) else "not_an_image"
        raise ImageError(reason, f"{type(e).__name__}: {e}"[:200]) from None
    with im:
        width, height = im.size
        if width < 1 or height < 1:
            raise ImageError("not_an_image", f"empty image {width}x{height}")
        if width * height > max_pixels:
            raise ImageError("too_many_pixels", f"{width}x{height} > {max_pixels} pixels")
        try:
            if im.format == "JPEG":  # let libjpeg decode at 1/2, 1/4 or 1/8 scale when that is enough
                scale = size / min(width, height)
                im.draft("RGB", (max(1, int(width * scale + 1)), max(1, int(height * scale + 1))))
            im.load()
            im = _flatten(ImageOps.exif_transpose(im))
            w, h = im.size
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            out = im.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
            buf = io.BytesIO()
            out.save(buf, format="JPEG", quality=quality)
        except Image.DecompressionBombError as e:
            raise ImageError("too_many_pixels", str(e)[:200]) from None
        except Exception as e:  # noqa: BLE001 - Pillow raises many types on corrupt data
            reason = "truncated" if "truncated" in str(e).lower() or isinstance(e, EOFError) else "decode_error"
            raise ImageError(reason, f"{type(e).__name__}: {e}"[:200]) from None
    return buf.getvalue(), (width, height)
