"""Image download stage: a real HTTP server on 127.0.0.1 with injected faults, local files, resume after kill -9."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from dataset_converters.demo import generate_demo
from dataset_converters.image_fetch import Fetcher, FetchError, RateLimiter
from dataset_converters.images import (ImageError, add_arguments, download_images, image_file_name, kept_item_ids,
                                       load_manifest, main_from_args, main_image_url, to_jpeg)
from dataset_converters.issues import ConversionError
from dataset_converters.meta import parse_meta

REPO = Path(__file__).resolve().parents[1]
FAST = dict(timeout=0.3, retries=2, backoff=0.01, progress=False)


# --------------------------------------------------------------------------- helpers


def png_header_image(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels: a few KB whatever the size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def jpeg_bytes(size=(120, 80), mode="RGB", colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Server:
    """ThreadingHTTPServer on 127.0.0.1:0; ``routes`` maps a path to ``fn(handler, n)`` (n = 1 for the first call)."""

    def __init__(self, routes, delay=0.0):
        self.routes = routes
        self.delay = delay
        self.counts: Counter = Counter()
        self.agents: set = set()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                with outer._lock:
                    outer.counts[self.path] += 1
                    outer.agents.add(self.headers.get("User-Agent", ""))
                    n = outer.counts[self.path]
                if outer.delay:
                    time.sleep(outer.delay)
                fn = outer.routes.get(self.path)
                if fn is None:
                    self.send_error(404)
                    return
                fn(self, n)

            def log_message(self, *args):
                pass

        class Quiet(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # the client gave up on purpose (timeouts, too_large)

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def send(handler, body: bytes, status=200, ctype="image/jpeg", length=None, headers=()):
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    if length is not False:
        handler.send_header("Content-Length", str(len(body) if length is None else length))
    for k, v in headers:
        handler.send_header(k, v)
    handler.end_headers()
    try:
        handler.wfile.write(body)
    except OSError:
        pass


def serve(body, ctype="image/jpeg"):
    return lambda h, n: send(h, body, ctype=ctype)


def meta_line(item_id, url=None, hi_res=True):
    images = [] if url is None else [{"thumb": url + "?thumb", "large": url, "variant": "MAIN",
                                       "hi_res": url if hi_res else None}]
    return json.dumps({"parent_asin": item_id, "title": f"item {item_id}", "main_category": "Test", "images": images})


def write_meta(path: Path, entries) -> Path:
    path.write_text("\n".join(meta_line(*e) for e in entries) + "\n", encoding="utf-8")
    return path


def check_stored(dataset: Path, manifest: dict, size=224):
    """Every ok record's file is a size x size RGB JPEG inside images/ with the recorded bytes and sha256."""
    images = (dataset / "images").resolve()
    for item_id, rec in manifest.items():
        if rec["status"] != "ok":
            assert rec["file"] is None and rec["reason"], rec
            continue
        assert rec["reason"] is None and rec["file"] == image_file_name(item_id)
        path = images / rec["file"]
        assert path.resolve().parent == images
        data = path.read_bytes()
        assert len(data) == rec["file_bytes"] and hashlib.sha256(data).hexdigest() == rec["sha256"]
        with Image.open(io.BytesIO(data)) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (size, size))
    stored = {p.name for p in images.iterdir()} - {"manifest.jsonl", ".lock"}
    assert stored == {r["file"] for r in manifest.values() if r["status"] == "ok"}


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Requests to the test server on 127.0.0.1 must not go through a proxy set in the environment."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("demo"), n_users=40, n_items=40, image_size=48, seed=5,
                         missing_image_rate=0.2, missing_hi_res_rate=0.3)


@pytest.fixture(scope="module")
def demo_images(demo):
    return sorted(demo.images_dir.glob("*.jpg"))


@pytest.fixture
def gift_cards(shared_data):
    root = shared_data / "amazon2018-gift-cards"
    if not (root / "meta_Gift_Cards.json").is_file() or not (root / "images").is_dir():
        pytest.skip(f"gift-card meta and photos not found under {root}")
    return root


# --------------------------------------------------------------------------- unit checks


def test_main_image_per_schema():
    m23 = parse_meta({"parent_asin": "A", "main_category": "x", "images": [
        {"variant": "PT01", "thumb": "t1", "large": "l1", "hi_res": "h1"},
        {"variant": "MAIN", "thumb": "t2", "large": "l2", "hi_res": None}]})
    assert main_image_url(m23) == "l2"  # MAIN entry, large when hi_res is null
    m23b = parse_meta({"parent_asin": "B", "main_category": "x", "images": [
        {"variant": "PT01", "thumb": "t1", "large": "l1", "hi_res": "h1"}]})
    assert main_image_url(m23b) == "h1"  # no MAIN: the first entry
    m18 = parse_meta({"asin": "C", "imageURL": ["s1", "s2"], "imageURLHighRes": ["H1", "H2"]})
    assert m18.schema == "2018" and main_image_url(m18) == "H1"
    m18b = parse_meta({"asin": "D", "imageURL": ["s1"], "imageURLHighRes": []})
    assert main_image_url(m18b) == "s1"
    m14 = parse_meta({"asin": "E", "imUrl": "http://x/e.jpg", "categories": [["Beauty"]]})
    assert m14.schema == "2014" and main_image_url(m14) == "http://x/e.jpg"
    assert main_image_url(parse_meta({"asin": "F", "imageURL": [], "imageURLHighRes": []})) is None
    assert main_image_url(None) is None


def test_file_names_are_safe_and_stable():
    hostile = ["../../etc/passwd", "a/b\x00c", "..", ".", ".hidden", "", "/abs", "C:\\x", "a" * 500, "\u00e9t\u00e9",
               "ABC", "abc", "a b", "a_b"]
    names = [image_file_name(i) for i in hostile]
    assert len(set(names)) == len(hostile)  # ids differing only in case or punctuation stay distinct
    for n in names:
        assert "/" not in n and "\\" not in n and "\x00" not in n and ".." not in n
        assert not n.startswith(".") and n.endswith(".jpg") and len(n) < 100
        assert Path(n).name == n
    assert image_file_name("B07K8YQ5ZL") == image_file_name("B07K8YQ5ZL")
    assert image_file_name("B07K8YQ5ZL").startswith("B07K8YQ5ZL-")


def test_to_jpeg_modes_and_bad_bodies(tmp_path):
    cases = {
        "palette_alpha": ("PNG", Image.new("RGBA", (300, 120), (0, 0, 255, 0)).convert("P")),
        "rgba": ("PNG", Image.new("RGBA", (50, 400), (0, 255, 0, 128))),
        "cmyk": ("JPEG", Image.new("CMYK", (640, 480), (0, 100, 200, 0))),
        "gray": ("JPEG", Image.new("L", (100, 100), 128)),
        "bilevel": ("PNG", Image.new("1", (33, 77), 1)),
        "webp": ("WEBP", Image.new("RGB", (500, 250), (10, 20, 30))),
    }
    for name, (fmt, im) in cases.items():
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        out, src = to_jpeg(buf.getvalue(), 224)
        assert src == im.size, name
        with Image.open(io.BytesIO(out)) as res:
            assert (res.format, res.mode, res.size) == ("JPEG", "RGB", (224, 224)), name
    # transparency is composited on white
    buf = io.BytesIO()
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(buf, format="PNG")
    with Image.open(io.BytesIO(to_jpeg(buf.getvalue(), 16)[0])) as res:
        assert min(res.getpixel((8, 8))) > 240
    good = jpeg_bytes((400, 300))
    bad = {b"": "not_an_image", b"<html>nope</html>": "not_an_image", good[: len(good) // 2]: "truncated",
           png_header_image(20_000, 20_000): "too_many_pixels", png_header_image(8000, 6000): "too_many_pixels"}
    for body, reason in bad.items():
        t0 = time.perf_counter()
        with pytest.raises(ImageError) as info:
            to_jpeg(body)
        assert info.value.reason == reason, (reason, info.value)
        assert time.perf_counter() - t0 < 1.0  # refused from the header, nothing decoded


def test_fetcher_refuses_schemes_and_oversized_files(tmp_path):
    f = Fetcher(timeout=0.3, retries=0, max_bytes=100)
    cases = [("ftp://127.0.0.1/x.jpg", "unsupported_scheme"), ("data:image/png;base64,AA", "unsupported_scheme"),
             ("/etc/hostname", "unsupported_scheme"), ("file:///nonexistent/x.jpg", "file_not_found"),
             (tmp_path.as_uri(), "not_a_file"), ("http://", "bad_url")]
    for url, reason in cases:
        with pytest.raises(FetchError) as info:
            f.fetch(url)
        assert info.value.reason == reason, url
    big = tmp_path / "big.jpg"
    big.write_bytes(b"x" * 101)
    with pytest.raises(FetchError) as info:
        f.fetch(big.as_uri())
    assert info.value.reason == "too_large"


def test_rate_limit_spans_threads():
    limiter = RateLimiter(50.0)
    t0 = time.monotonic()
    threads = [threading.Thread(target=lambda: [limiter.acquire() for _ in range(3)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 >= 11 / 50 - 0.01  # 12 acquisitions, evenly spaced 20 ms apart


def test_one_run_per_folder(tmp_path, demo_images):
    fcntl = pytest.importorskip("fcntl")
    dataset = tmp_path / "ds"
    (dataset / "images").mkdir(parents=True)
    meta = write_meta(tmp_path / "meta.jsonl", [("A", demo_images[0].as_uri())])
    with open(dataset / "images" / ".lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ConversionError, match="another image download"):
            download_images(dataset, [meta], progress=False)
    assert download_images(dataset, [meta], progress=False).ok == 1


# --------------------------------------------------------------------------- the stage over HTTP


def test_http_faults_retries_and_rerun(tmp_path, demo_images):
    imgs = [p.read_bytes() for p in demo_images[:6]]
    bomb = png_header_image(20_000, 20_000)
    assert len(bomb) < 200_000
    state = {"e400_fixed": False}

    def flaky(h, n):
        send(h, b"oops", status=500, ctype="text/plain") if n == 1 else send(h, imgs[1])

    def slow(h, n):
        time.sleep(1.0)
        send(h, imgs[2])

    def truncated(h, n):
        send(h, imgs[3][:500], length=len(imgs[3]))

    def e400(h, n):
        send(h, imgs[4]) if state["e400_fixed"] else send(h, b"bad", status=400, ctype="text/plain")

    routes = {
        "/img/0.jpg": serve(imgs[0]), "/img/hostile1.jpg": serve(imgs[0]), "/img/hostile2.jpg": serve(imgs[5]),
        "/img/target.jpg": serve(imgs[5]),
        "/redirect.jpg": lambda h, n: send(h, b"", status=301, headers=[("Location", "/img/target.jpg")]),
        "/e404.jpg": lambda h, n: send(h, b"nope", status=404, ctype="text/plain"),
        "/e503.jpg": lambda h, n: send(h, b"busy", status=503, ctype="text/plain"),
        "/flaky.jpg": flaky, "/slow.jpg": slow, "/truncated.jpg": truncated, "/e400.jpg": e400,
        "/text.jpg": serve(b"<html><body>not an image</body></html>", ctype="text/html"),
        "/bomb.png": serve(bomb, ctype="image/png"),
        "/huge.jpg": lambda h, n: send(h, b"\xff" * 1_500_000, length=False),
        "/loop.jpg": lambda h, n: send(h, b"", status=302, headers=[("Location", "/loop.jpg")]),
        "/shadowed.jpg": lambda h, n: send(h, b"nope", status=404),
    }
    server = Server(routes)
    try:
        local_root = tmp_path / "local"
        local_root.mkdir()
        buf = io.BytesIO()
        Image.new("RGBA", (300, 200), (0, 128, 0, 255)).save(buf, format="PNG")
        (local_root / "LOCAL1.png").write_bytes(buf.getvalue())
        u = server.url
        entries = [
            ("OK0", u("/img/0.jpg")), ("../../etc/passwd", u("/img/hostile1.jpg")),
            ("a/b\x00c", u("/img/hostile2.jpg")), ("REDIR", u("/redirect.jpg")), ("FLAKY", u("/flaky.jpg")),
            ("E404", u("/e404.jpg")), ("E503", u("/e503.jpg")), ("SLOW", u("/slow.jpg")),
            ("TRUNC", u("/truncated.jpg")), ("E400", u("/e400.jpg")), ("TEXT", u("/text.jpg")),
            ("BOMB", u("/bomb.png")), ("HUGE", u("/huge.jpg")), ("LOOP", u("/loop.jpg")),
            ("LOCAL1", u("/shadowed.jpg")), ("FILE", demo_images[0].as_uri(), False),
            ("FTP", "ftp://127.0.0.1/x.jpg"), ("NOIMG", None),
        ]
        meta = write_meta(tmp_path / "meta.jsonl", entries)
        dataset = tmp_path / "ds"
        dataset.mkdir()
        items = [e[0] for e in entries] + ["NOMETA"]
        run = dict(items=items, image_root=local_root, workers=4, max_bytes=1_000_000, **FAST)
        t0 = time.monotonic()
        report = download_images(dataset, [meta], **run)
        assert time.monotonic() - t0 < 15

        expected = {
            "OK0": ("ok", None), "../../etc/passwd": ("ok", None), "a/b\x00c": ("ok", None), "REDIR": ("ok", None),
            "FLAKY": ("ok", None), "E404": ("failed", "http_404"), "E503": ("failed", "http_503"),
            "SLOW": ("failed", "timeout"), "TRUNC": ("failed", "truncated"), "E400": ("failed", "http_400"),
            "TEXT": ("failed", "not_an_image"), "BOMB": ("failed", "too_many_pixels"), "HUGE": ("failed", "too_large"),
            "LOOP": ("failed", "too_many_redirects"), "LOCAL1": ("ok", None), "FILE": ("ok", None),
            "FTP": ("failed", "unsupported_scheme"), "NOIMG": ("missing", "no_image"), "NOMETA": ("missing", "no_meta"),
        }
        manifest = load_manifest(dataset)
        assert {k: (r["status"], r["reason"]) for k, r in manifest.items()} == expected
        assert report.counts == {"ok": 7, "missing": 2, "failed": 10}
        assert report.downloaded == 7 and report.reused == 0 and report.images_per_s > 0
        assert report.reasons["no_meta"] == 1 and report.reasons["timeout"] == 1
        first = {
            "/img/0.jpg": 1, "/img/hostile1.jpg": 1, "/img/hostile2.jpg": 1, "/redirect.jpg": 1, "/img/target.jpg": 1,
            "/flaky.jpg": 2, "/e404.jpg": 1, "/e503.jpg": 3, "/slow.jpg": 3, "/truncated.jpg": 3, "/e400.jpg": 1,
            "/text.jpg": 1, "/bomb.png": 1, "/huge.jpg": 1, "/loop.jpg": 6,
        }
        assert dict(server.counts) == first  # /shadowed.jpg never asked: the local file wins
        assert len(server.agents) == 1 and next(iter(server.agents)).startswith("recbole-mmfusion")
        assert manifest["FLAKY"]["attempts"] == 2 and manifest["FLAKY"]["http_status"] == 200
        assert manifest["E404"]["http_status"] == 404 and manifest["E404"]["attempts"] == 1
        assert manifest["E503"]["attempts"] == 3 and manifest["SLOW"]["attempts"] == 3
        assert manifest["LOCAL1"]["url"] == (local_root / "LOCAL1.png").resolve().as_uri()
        assert manifest["LOCAL1"]["width"] == 300 and manifest["BOMB"]["width"] is None
        assert manifest["OK0"]["bytes"] == len(imgs[0]) and manifest["OK0"]["url"] == u("/img/0.jpg")
        check_stored(dataset, manifest)
        assert not list(tmp_path.rglob("passwd")) and not (tmp_path / "etc").exists()

        # second run: ok items are not fetched again, failed ones are retried (and E400 now succeeds)
        state["e400_fixed"] = True
        report2 = download_images(dataset, [meta], **run)
        second = dict(first)
        for path, n in {"/e404.jpg": 1, "/e503.jpg": 3, "/slow.jpg": 3, "/truncated.jpg": 3, "/e400.jpg": 1,
                        "/text.jpg": 1, "/bomb.png": 1, "/huge.jpg": 1, "/loop.jpg": 6}.items():
            second[path] += n
        assert dict(server.counts) == second
        manifest2 = load_manifest(dataset)
        assert manifest2["E400"]["status"] == "ok"
        assert report2.counts == {"ok": 8, "missing": 2, "failed": 9}
        assert report2.reused == 7 and report2.downloaded == 1
        for k in ("OK0", "FLAKY", "LOCAL1"):
            assert manifest2[k] == manifest[k]  # untouched record, same file
        check_stored(dataset, manifest2)
        lines = (dataset / "images" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(items)  # compacted: one line per item

        # a deleted image is fetched again; nothing else is
        (dataset / "images" / manifest2["OK0"]["file"]).unlink()
        download_images(dataset, [meta], **dict(run, items=["OK0", "FLAKY", "REDIR"]))
        assert server.counts["/img/0.jpg"] == 2 and server.counts["/flaky.jpg"] == 2
        assert server.counts["/redirect.jpg"] == 1
    finally:
        server.close()


def test_real_photos_over_http(tmp_path, gift_cards):
    photos = sorted((gift_cards / "images").glob("*.jpg"))[:12]
    routes = {f"/p/{p.name}": serve(p.read_bytes()) for p in photos}
    server = Server(routes)
    try:
        meta = write_meta(tmp_path / "meta.jsonl", [(p.stem, server.url(f"/p/{p.name}")) for p in photos])
        dataset = tmp_path / "ds"
        dataset.mkdir()
        report = download_images(dataset, [meta], workers=4, **FAST)
        assert report.counts == {"ok": len(photos), "missing": 0, "failed": 0}
        assert all(n == 1 for n in server.counts.values()) and len(server.counts) == len(photos)
        manifest = load_manifest(dataset)
        check_stored(dataset, manifest)
        for p in photos:
            with Image.open(p) as im:
                assert (manifest[p.stem]["width"], manifest[p.stem]["height"]) == im.size
    finally:
        server.close()


def test_gift_card_meta_with_image_root(tmp_path, gift_cards):
    from dataset_converters.meta import read_meta

    metas = list(read_meta(gift_cards / "meta_Gift_Cards.json"))
    photos = {p.stem for p in (gift_cards / "images").glob("*.jpg")}
    with_photo = [m.item_id for m in metas if m.item_id in photos][:25]
    no_image = [m.item_id for m in metas if not m.images][:5]
    assert len(with_photo) == 25 and len(no_image) == 5
    dataset = tmp_path / "gift"
    dataset.mkdir()
    (dataset / "gift.item").write_text("item_id:token\ttitle:token_seq\n"
                                       + "".join(f"{i}\tx\n" for i in with_photo + no_image), encoding="utf-8")
    assert kept_item_ids(dataset) == with_photo + no_image
    # no server at all: every photo comes from image_root, never from the (unreachable) URLs
    report = download_images(dataset, [gift_cards / "meta_Gift_Cards.json"], image_root=gift_cards / "images",
                             workers=2, **dict(FAST, progress=True))
    assert report.counts == {"ok": 25, "missing": 5, "failed": 0}
    assert report.reasons == {"no_image": 5}
    manifest = load_manifest(dataset)
    check_stored(dataset, manifest)
    assert all(manifest[i]["url"].startswith("file://") for i in with_photo)


def test_demo_dataset_meta(tmp_path, demo):
    from dataset_converters.meta import read_meta

    metas = {m.item_id: m for m in read_meta(demo.meta)}
    ids = list(metas)
    kept = ids[:30]
    dataset = tmp_path / "amazon-demo"
    dataset.mkdir()
    # the item ids come from the .inter file when there is no .item file
    rows = "".join(f"u{k}\t{i}\t{k}\n" for k, i in enumerate(kept + kept[:5]))
    (dataset / "amazon-demo.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + rows,
                                               encoding="utf-8")
    (dataset / "amazon-demo.train.inter").write_text("user_id:token\titem_id:token\n", encoding="utf-8")
    report = download_images(dataset, [demo.meta], workers=2, progress=False)
    with_image = [i for i in kept if metas[i].images]
    hires_null = [i for i in with_image if metas[i].images[0]["hi_res"] is None]
    assert with_image and hires_null and len(with_image) < len(kept)
    assert report.counts == {"ok": len(with_image), "missing": len(kept) - len(with_image), "failed": 0}
    manifest = load_manifest(dataset)
    assert sorted(manifest) == sorted(kept)
    for i in kept:
        assert manifest[i]["url"] == main_image_url(metas[i])
    for i in hires_null:
        assert manifest[i]["url"] == metas[i].images[0]["large"]
    check_stored(dataset, manifest)
    # a different size redoes the stored images
    report = download_images(dataset, [demo.meta], size=32, workers=2, progress=False)
    assert report.downloaded == len(with_image) and report.reused == 0
    check_stored(dataset, load_manifest(dataset), size=32)


def test_torn_journal_line_is_ignored(tmp_path, demo_images):
    dataset = tmp_path / "ds"
    dataset.mkdir()
    meta = write_meta(tmp_path / "meta.jsonl", [("A", demo_images[0].as_uri()), ("B", demo_images[1].as_uri())])
    download_images(dataset, [meta], items=["A"], progress=False)
    journal = dataset / "images" / "manifest.jsonl"
    with open(journal, "ab") as f:
        f.write(b'{"item_id": "B", "status": "ok", "file": "B-')  # a line cut by a crash
    assert set(load_manifest(dataset)) == {"A"}
    report = download_images(dataset, [meta], items=["A", "B"], progress=False)
    assert report.reused == 1 and report.downloaded == 1
    lines = journal.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["item_id"] for x in lines] == ["A", "B"]


def test_cli_arguments_and_errors(tmp_path, demo, capsys):
    parser = add_arguments(argparse.ArgumentParser())
    dataset = tmp_path / "ds"
    dataset.mkdir()
    args = parser.parse_args(["--dataset-dir", str(dataset), "--meta", str(demo.meta), "--workers", "2",
                              "--size", "40", "--no-progress", "--rate-limit", "1000"])
    assert main_from_args(args) == 0
    manifest = load_manifest(dataset)
    assert manifest and {r["status"] for r in manifest.values()} <= {"ok", "missing"}
    check_stored(dataset, manifest, size=40)
    for argv in (["--dataset-dir", str(tmp_path / "nope"), "--meta", str(demo.meta)],
                 ["--dataset-dir", str(dataset), "--meta", str(tmp_path / "nope.jsonl")],
                 ["--dataset-dir", str(dataset), "--meta", str(demo.meta), "--image-root", str(tmp_path / "no")]):
        capsys.readouterr()
        assert main_from_args(parser.parse_args(argv + ["--no-progress"])) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "not found" in err


# --------------------------------------------------------------------------- crash safety


KILL_SCRIPT = """
import sys
from dataset_converters.images import download_images
download_images(sys.argv[1], [sys.argv[2]], workers=1, timeout=5, progress=False)
"""


def test_kill_9_mid_run_then_resume(tmp_path, demo_images):
    bodies = {f"/k/{k}.jpg": p.read_bytes() for k, p in enumerate(demo_images[:20])}
    blocked = "/k/6.jpg"  # its first request is held until the process is killed
    asked, release = threading.Event(), threading.Event()
    served: Counter = Counter()  # bodies sent in full

    def route(path, body):
        def fn(h, n):
            if path == blocked and n == 1:
                asked.set()
                release.wait(30)
                return  # the client is gone
            send(h, body)
            served[path] += 1
        return fn

    server = Server({path: route(path, b) for path, b in bodies.items()})
    try:
        entries = [(f"K{k}", server.url(path)) for k, path in enumerate(bodies)]
        meta = write_meta(tmp_path / "meta.jsonl", entries)
        dataset = tmp_path / "ds"
        dataset.mkdir()
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(dataset), str(meta)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None and not asked.wait(0.02):
                pass
            assert proc.poll() is None and asked.is_set(), proc.stderr.read().decode()[-2000:]
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
            proc.stderr.close()
            release.set()
        assert proc.returncode == -signal.SIGKILL
        before = load_manifest(dataset)
        # K0..K5 were stored before K6 was asked for; the line of K5 may not have been written yet
        assert set(before) in ({f"K{k}" for k in range(5)}, {f"K{k}" for k in range(6)})
        assert all(r["status"] == "ok" for r in before.values())
        images = dataset / "images"
        for p in images.iterdir():  # every finished file is a whole image; only .tmp files may be partial
            if p.suffix == ".jpg" and not p.name.startswith("."):
                with Image.open(p) as im:
                    im.load()
        assert (images / image_file_name("K5")).is_file()
        report = download_images(dataset, [meta], workers=2, timeout=5, progress=False)
        assert report.counts == {"ok": len(entries), "missing": 0, "failed": 0}
        after = load_manifest(dataset)
        check_stored(dataset, after)
        adopted = sorted(i for i, r in after.items() if r.get("reused_file"))
        assert adopted == ([] if "K5" in before else ["K5"])
        assert report.reused == len(before) + len(adopted) and report.downloaded == len(entries) - report.reused
        for item_id in before:  # finished before the kill: untouched
            assert after[item_id] == before[item_id]
        # no image was downloaded twice: only the request held at the kill was made again
        assert dict(served) == dict.fromkeys(bodies, 1)
        assert dict(server.counts) == {path: 2 if path == blocked else 1 for path in bodies}
        assert not [p for p in images.iterdir() if p.name.endswith(".tmp")]
    finally:
        release.set()
        server.close()


def test_an_image_stored_without_its_manifest_line_is_not_downloaded_again(tmp_path, demo_images):
    bodies = {f"/s/{k}.jpg": p.read_bytes() for k, p in enumerate(demo_images[:4])}
    server = Server({path: serve(b) for path, b in bodies.items()})
    try:
        ids = ["A", "B", "C", "D"]
        meta = write_meta(tmp_path / "meta.jsonl", list(zip(ids, map(server.url, bodies))))
        dataset = tmp_path / "ds"
        dataset.mkdir()
        download_images(dataset, [meta], items=ids[:3], workers=1, **FAST)
        first = load_manifest(dataset)
        images = dataset / "images"
        journal = images / "manifest.jsonl"
        # as after a kill: B and C stored but their lines never written; C's file is not a whole image;
        # a file of another size is in D's place
        journal.write_text(json.dumps(first["A"]) + "\n", encoding="utf-8")
        c_file = images / image_file_name("C")
        c_file.write_bytes(c_file.read_bytes()[:300])
        (images / image_file_name("D")).write_bytes(jpeg_bytes(size=(32, 32)))
        report = download_images(dataset, [meta], items=ids, workers=1, **FAST)
        assert report.counts == {"ok": 4, "missing": 0, "failed": 0}
        assert report.reused == 2 and report.downloaded == 2
        assert [server.counts[p] for p in bodies] == [1, 1, 2, 1]
        after = load_manifest(dataset)
        check_stored(dataset, after)
        b = after["B"]
        assert b["reused_file"] is True and b["reason"] is None and b["attempts"] == 0
        assert (b["file"], b["file_bytes"], b["sha256"], b["url"]) == (
            first["B"]["file"], first["B"]["file_bytes"], first["B"]["sha256"], first["B"]["url"])
        assert not any(after[i].get("reused_file") for i in ("A", "C", "D"))
        # the adopted record is an ordinary ok record from now on
        again = download_images(dataset, [meta], items=ids, workers=1, **FAST)
        assert again.reused == 4 and again.downloaded == 0 and load_manifest(dataset)["B"] == b
    finally:
        server.close()


def test_a_run_without_network_stops_early(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: every connection is refused
    ids = [f"N{k}" for k in range(200)]
    meta = write_meta(tmp_path / "meta.jsonl", [(i, f"http://127.0.0.1:{port}/{i}.jpg") for i in ids])
    dataset = tmp_path / "ds"
    dataset.mkdir()
    t0 = time.monotonic()
    report = download_images(dataset, [meta], items=ids, workers=4, timeout=2, retries=2, backoff=0.01,
                             progress=False)
    assert time.monotonic() - t0 < 20
    assert report.aborted_unreachable
    manifest = load_manifest(dataset)
    assert 20 <= len(manifest) < 40  # the 20 in a row, plus those in flight when the run stopped
    assert report.counts == {"ok": 0, "missing": 0, "failed": len(manifest)}
    assert report.not_done == len(ids) - len(manifest) and report.reasons == {"connection_error": len(manifest)}
    assert all(r["status"] == "failed" and r["reason"] == "connection_error" for r in manifest.values())
    assert sorted(report.failed_items) == sorted(manifest)
    # a later run tries the items left out (here without stopping)
    report = download_images(dataset, [meta], items=ids, workers=8, timeout=2, retries=0, backoff=0.01,
                             progress=False, unreachable_limit=None)
    assert not report.aborted_unreachable and report.not_done == 0
    assert report.counts["failed"] == len(ids) and len(load_manifest(dataset)) == len(ids)


def test_an_answer_between_unreachable_items_keeps_the_run_going(tmp_path, demo_images):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = Server({"/ok.jpg": serve(demo_images[0].read_bytes())})
    try:
        entries = [(f"M{k}", server.url("/ok.jpg") if k % 5 == 4 else f"http://127.0.0.1:{port}/x.jpg")
                   for k in range(30)]
        meta = write_meta(tmp_path / "meta.jsonl", entries)
        dataset = tmp_path / "ds"
        dataset.mkdir()
        run = dict(workers=1, timeout=2, retries=0, backoff=0.01, progress=False)
        report = download_images(dataset, [meta], unreachable_limit=5, **run)
        assert not report.aborted_unreachable and report.counts == {"ok": 6, "missing": 0, "failed": 24}
        shutil.rmtree(dataset / "images")
        report = download_images(dataset, [meta], unreachable_limit=4, **run)
        assert report.aborted_unreachable and report.counts["failed"] >= 4 and report.not_done > 0
    finally:
        server.close()


def test_local_images_are_stored_even_when_the_network_is_gone(tmp_path, demo_images):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = tmp_path / "photos"
    root.mkdir()
    local = [f"L{k}" for k in range(3)]
    for item, source in zip(local, demo_images):
        shutil.copy(source, root / f"{item}.jpg")
    remote = [f"R{k}" for k in range(30)]  # listed first: they fail before any local item is reached
    meta = write_meta(tmp_path / "meta.jsonl", [(i, f"http://127.0.0.1:{port}/{i}.jpg") for i in remote + local])
    dataset = tmp_path / "ds"
    dataset.mkdir()
    report = download_images(dataset, [meta], image_root=root, workers=1, timeout=2, retries=0, backoff=0.01,
                             progress=False, unreachable_limit=5)
    assert report.aborted_unreachable
    manifest = load_manifest(dataset)
    assert all(manifest[i]["status"] == "ok" for i in local)
