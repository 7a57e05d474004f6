"""Raw files are downloaded resumably from a real local HTTP server, and only whole files are ever put in place."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import recbole_mmfusion  # noqa: F401
from dataset_converters.demo import generate_demo
from dataset_converters.download import DownloadError, NoNetworkError, fetch, part_path, state_path
from recbole_mmfusion.config import MMConfig
from recbole_mmfusion.datasets import DatasetNotFoundError, prepare_dataset, required_files

REPO = Path(__file__).resolve().parents[1]
FAST = {"timeout": 5, "backoff": 0.01, "progress": False}


class FileServer:
    """Serves ``files`` (URL path -> bytes) with Range support; ``plan[path]`` lists one behaviour per request.

    Behaviours: ``ok``; ``cut`` (full Content-Length, half the body, then close); ``cut_change`` (a ``cut``, after
    which the file becomes ``changes[path]``); ``ignore_range`` (200 with the whole file); ``no_length`` (no
    Content-Length, half the body, then close); ``416_no_total`` (416 without Content-Range); ``500``; ``404``.
    When a path's plan is used up, ``default`` applies. Answers carry an ``ETag`` (from the file's bytes) and a
    ``Last-Modified``; ``If-Range`` is honoured unless ``if_range`` is False (then the range is served anyway).
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.plan: dict[str, list[str]] = {}
        self.default = "ok"
        self.changes: dict[str, bytes] = {}
        self.if_range = True
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.if_ranges: list[str | None] = []  # If-Range header of each request
        self.bytes_sent = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, request: BaseHTTPRequestHandler):
        path = request.path
        with self.lock:
            self.requests.append((path, request.headers.get("Range")))
            self.if_ranges.append(request.headers.get("If-Range"))
            queue = self.plan.get(path)
            action = queue.pop(0) if queue else self.default
        data = self.files.get(path)
        if data is None or action == "404":
            request.send_error(404, "Not Found")
            return
        if action == "500":
            request.send_error(500, "Internal Server Error")
            return
        if action == "416_no_total":
            request.send_response(416)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        start, status = 0, 200
        wanted = request.headers.get("Range")
        validator = request.headers.get("If-Range")
        if validator and self.if_range and validator != etag:
            wanted = None  # the file changed: the whole of it, with 200
        if wanted and action != "ignore_range":
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                request.send_response(416)
                request.send_header("Content-Range", f"bytes */{len(data)}")
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
            status = 206
        body = data[start:]
        request.send_response(status)
        request.send_header("ETag", etag)
        request.send_header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
        if status == 206:
            request.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if action != "no_length":
            request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if action in ("cut", "cut_change", "no_length"):
            body = body[: len(body) // 2]
        request.wfile.write(body)
        request.wfile.flush()
        with self.lock:
            self.bytes_sent += len(body)
        if action == "cut_change":
            with self.lock:
                self.files[path] = self.changes.pop(path)
        if action in ("cut", "cut_change", "no_length"):
            request.close_connection = True
            request.connection.shutdown(socket.SHUT_RDWR)

    def count(self, path=None) -> int:
        return sum(1 for p, _ in self.requests if path is None or p == path)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    srv = FileServer()
    yield srv
    srv.close()


def _payload(size=300_000) -> bytes:
    """A gzip file of about ``size`` bytes (random, so incompressible)."""
    return gzip.compress(os.urandom(size), compresslevel=1)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_cut_connection_is_resumed_with_a_range_request(server, tmp_path):
    data = _payload()
    server.files["/f.jsonl.gz"] = data
    server.plan["/f.jsonl.gz"] = ["cut"]
    dest = tmp_path / "f.jsonl.gz"
    assert fetch(server.url + "f.jsonl.gz", dest, retries=3, **FAST) == dest
    assert dest.read_bytes() == data and not part_path(dest).exists()
    assert server.requests[0][1] is None and server.requests[1][1] == f"bytes={len(data) // 2}-"
    assert server.count() == 2 and server.bytes_sent < 2 * len(data)


def test_a_server_ignoring_range_makes_the_download_start_over(server, tmp_path):
    data = _payload()
    server.files["/f.gz"] = data
    server.plan["/f.gz"] = ["cut", "ignore_range"]
    dest = tmp_path / "f.gz"
    fetch(server.url + "f.gz", dest, retries=3, **FAST)
    assert dest.read_bytes() == data
    assert server.requests[1][1] is not None and server.count() == 2


def test_5xx_is_retried(server, tmp_path):
    server.files["/f.gz"] = data = _payload(1000)
    server.plan["/f.gz"] = ["500", "500"]
    fetch(server.url + "f.gz", tmp_path / "f.gz", retries=2, **FAST)
    assert (tmp_path / "f.gz").read_bytes() == data and server.count() == 3


def test_404_fails_at_once_with_one_line(server, tmp_path):
    dest = tmp_path / "missing.gz"
    with pytest.raises(DownloadError) as caught:
        fetch(server.url + "missing.gz", dest, retries=5, **FAST)
    message = str(caught.value)
    assert "404" in message and server.url + "missing.gz" in message and "\n" not in message
    assert server.count() == 1 and not dest.exists() and not part_path(dest).exists()


def test_a_server_that_always_cuts_never_yields_a_final_file(server, tmp_path):
    data = _payload()
    server.files["/f.gz"] = data
    server.default = "cut"
    dest = tmp_path / "f.gz"
    with pytest.raises(DownloadError, match="gave up after 3 retries"):
        fetch(server.url + "f.gz", dest, retries=3, **FAST)
    assert not dest.exists() and server.count() == 4
    kept = part_path(dest).read_bytes()
    assert 0 < len(kept) < len(data) and data.startswith(kept)
    # the next call resumes from the bytes kept
    server.default = "ok"
    fetch(server.url + "f.gz", dest, retries=0, **FAST)
    assert dest.read_bytes() == data and server.requests[-1][1] == f"bytes={len(kept)}-"


def test_without_a_length_only_a_complete_gzip_stream_is_accepted(server, tmp_path):
    data = _payload()
    server.files["/f.gz"] = data
    server.plan["/f.gz"] = ["no_length"]
    dest = tmp_path / "f.gz"
    fetch(server.url + "f.gz", dest, retries=2, **FAST)
    assert dest.read_bytes() == data and server.count() == 2 and server.requests[1][1] is not None


def test_a_whole_part_file_is_checked_against_the_server_total(server, tmp_path):
    data = _payload(2000)
    server.files["/f.gz"] = data
    dest = tmp_path / "f.gz"
    part_path(dest).write_bytes(data)  # answered with 416 and the total, which matches
    fetch(server.url + "f.gz", dest, retries=0, **FAST)
    assert dest.read_bytes() == data and server.count() == 1
    other = tmp_path / "g.gz"
    part_path(other).write_bytes(data + b"junk")  # larger than the server's file: start over
    fetch(server.url + "f.gz", other, retries=1, **FAST)
    assert other.read_bytes() == data and not part_path(other).exists()


def test_a_resume_sends_the_validator_and_leaves_no_state_behind(server, tmp_path):
    data = _payload()
    server.files["/f.gz"] = data
    server.plan["/f.gz"] = ["cut"]
    dest = tmp_path / "f.gz"
    fetch(server.url + "f.gz", dest, retries=3, **FAST)
    assert dest.read_bytes() == data
    assert server.if_ranges == [None, '"' + hashlib.sha256(data).hexdigest()[:16] + '"']
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.gz"]


def test_the_validators_are_kept_beside_the_part_file(server, tmp_path):
    data = _payload()
    server.files["/f.gz"] = data
    server.default = "cut"
    dest = tmp_path / "f.gz"
    with pytest.raises(DownloadError):
        fetch(server.url + "f.gz", dest, retries=0, **FAST)
    state = json.loads(state_path(dest).read_text())
    assert state["etag"] == '"' + hashlib.sha256(data).hexdigest()[:16] + '"' and state["total"] == len(data)
    assert state["last_modified"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert state_path(dest).name == "f.gz.part.json" and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("if_range", [True, False], ids=["if_range_honoured", "if_range_ignored"])
@pytest.mark.parametrize("same_size", [True, False], ids=["same_size", "other_size"])
def test_a_file_changed_between_a_cut_and_the_resume_is_downloaded_whole(server, tmp_path, if_range, same_size):
    old = os.urandom(200_000)
    new = os.urandom(200_000 if same_size else 260_000)
    server.files["/f.bin"] = old
    server.changes["/f.bin"] = new
    server.plan["/f.bin"] = ["cut_change"]
    server.if_range = if_range
    dest = tmp_path / "f.bin"
    fetch(server.url + "f.bin", dest, retries=3, **FAST)
    assert dest.read_bytes() == new  # never old bytes followed by new ones
    assert not part_path(dest).exists() and not state_path(dest).exists()
    assert server.requests[1][1] == f"bytes={len(old) // 2}-"
    # a server honouring If-Range sends the new file at once; another one is asked again from byte 0
    assert server.count() == (2 if if_range else 3)
    if not if_range:
        assert server.requests[2][1] is None


def test_a_part_file_of_another_version_is_discarded(server, tmp_path):
    data = _payload(2000)
    server.files["/f.gz"] = data
    server.if_range = False
    dest = tmp_path / "f.gz"
    part_path(dest).write_bytes(data[:1000])
    state_path(dest).write_text(json.dumps({"etag": '"other"', "last_modified": None, "total": len(data)}))
    fetch(server.url + "f.gz", dest, retries=1, **FAST)
    assert dest.read_bytes() == data and server.count() == 2 and server.requests[1][1] is None


def test_416_without_a_total_restarts_a_file_that_cannot_be_checked(server, tmp_path):
    data = os.urandom(3000)
    server.files["/f.bin"] = data
    server.plan["/f.bin"] = ["416_no_total"]
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(os.urandom(3000))  # same size, other bytes: nothing says it is whole
    fetch(server.url + "f.bin", dest, retries=1, **FAST)
    assert dest.read_bytes() == data
    assert [rng for _, rng in server.requests] == ["bytes=3000-", None]


def test_416_without_a_total_accepts_a_complete_gzip_part_file(server, tmp_path):
    data = _payload(2000)
    server.files["/f.gz"] = data
    server.plan["/f.gz"] = ["416_no_total"]
    dest = tmp_path / "f.gz"
    part_path(dest).write_bytes(data)
    fetch(server.url + "f.gz", dest, retries=0, **FAST)
    assert dest.read_bytes() == data and server.count() == 1


def test_no_server_fails_fast(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/f.gz"
    started = time.monotonic()
    with pytest.raises(NoNetworkError, match="connection refused"):
        fetch(url, tmp_path / "f.gz", timeout=60, retries=5, backoff=5, progress=False)
    assert time.monotonic() - started < 3
    assert not (tmp_path / "f.gz").exists() and not part_path(tmp_path / "f.gz").exists()


def _config(tmp_path, **extra):
    return MMConfig("BPR", "amazon-electronics", config_dict={
        "data_path": str(tmp_path / "dataset"), "use_gpu": False, "state": "WARNING", **extra})


def test_prepare_dataset_without_network_names_the_files_and_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = f"http://127.0.0.1:{_closed_port()}/amazon/"
    started = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as caught:
        prepare_dataset(_config(tmp_path, download_base_url=base))
    assert time.monotonic() - started < 3
    message = str(caught.value)
    raw = tmp_path / "dataset" / "raw" / "amazon-electronics"
    assert message.startswith("cannot download amazon-electronics (no network: connection refused")
    assert (f"place Electronics.jsonl.gz and meta_Electronics.jsonl.gz from {base}review_categories/ and "
            f"{base}meta_categories/ in {raw}/ (or set --raw_path=DIR)") in message
    assert "\n" not in message
    # download: False keeps to the files placed by hand
    with pytest.raises(DatasetNotFoundError, match="raw files are missing: place .*Electronics.jsonl.gz"):
        prepare_dataset(_config(tmp_path, download_base_url=base, download=False))


@pytest.fixture
def electronics(server, tmp_path):
    demo = generate_demo(tmp_path / "demo", n_users=120, n_items=60, image_size=16)
    server.files["/raw/review_categories/Electronics.jsonl.gz"] = demo.reviews.read_bytes()
    server.files["/raw/meta_categories/meta_Electronics.jsonl.gz"] = demo.meta.read_bytes()
    server.plan["/raw/review_categories/Electronics.jsonl.gz"] = ["cut"]
    return server.url + "raw/"


def test_prepare_dataset_downloads_converts_then_reuses(server, electronics, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepare_dataset(_config(tmp_path, download_base_url=electronics))
    config = _config(tmp_path, download_base_url=electronics)
    assert all(path.is_file() for path in required_files(config))
    raw = tmp_path / "dataset" / "raw" / "amazon-electronics"
    assert (raw / "Electronics.jsonl.gz").read_bytes() == server.files["/raw/review_categories/Electronics.jsonl.gz"]
    assert sorted(p.name for p in raw.iterdir()) == ["Electronics.jsonl.gz", "meta_Electronics.jsonl.gz"]
    assert any(rng for path, rng in server.requests if path.endswith("/Electronics.jsonl.gz"))
    seen = server.count()
    prepare_dataset(config)
    assert server.count() == seen == 3
    # converted once, the raw files are only needed again when the conversion must be redone
    shutil.rmtree(raw)
    prepare_dataset(_config(tmp_path, download_base_url=electronics))
    assert server.count() == seen


@pytest.mark.slow
def test_command_line_with_only_the_dataset_name(server, electronics, tmp_path):
    env = {**os.environ, "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(REPO / "run_recbole_mm.py"), "--model=BPR", "--dataset=amazon-electronics",
         "--epochs=1", "--use_gpu=False", "--no-save", f"--download_base_url={electronics}",
         f"--data_path={tmp_path / 'dataset'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Test results for BPR on amazon-electronics" in done.stdout
    assert (tmp_path / "dataset" / "raw" / "amazon-electronics" / "meta_Electronics.jsonl.gz").is_file()
