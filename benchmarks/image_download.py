"""Image download throughput from a local HTTP server, with 1 and with 8 workers.

    python benchmarks/image_download.py [--images N] [--source auto|gift-cards|demo] [--latency 0.05]

Serves N product images from a ThreadingHTTPServer on 127.0.0.1 (the real 2018 gift-card photos from
../shared/data when present, else generated demo images), then runs the real ``download_images``
stage on a meta file pointing at them, once per worker count, each time into a fresh dataset folder.
``--latency`` adds a delay to every response to mimic a remote server. Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataset_converters.demo import generate_demo  # noqa: E402
from dataset_converters.images import download_images  # noqa: E402


def shared_data() -> Path:
    env = os.environ.get("RECBOLE_MM_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def load_images(source: str, n: int, work: Path):
    """``(source name, {name: bytes})`` with at most ``n`` images."""
    photos = shared_data() / "amazon2018-gift-cards" / "images"
    if source in ("auto", "gift-cards") and photos.is_dir():
        files = sorted(photos.glob("*.jpg"))[:n]
        return "gift-cards", {p.name: p.read_bytes() for p in files}
    if source == "gift-cards":
        raise SystemExit(f"gift-card photos not found at {photos}")
    demo = generate_demo(work / "demo", n_users=50, n_items=max(20, int(n / 0.85) + 10), image_size=320, seed=0,
                         missing_image_rate=0.0)
    files = sorted(demo.images_dir.glob("*.jpg"))[:n]
    return "demo", {p.name: p.read_bytes() for p in files}


def start_server(bodies, latency: float):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server API
            body = bodies.get(self.path.rsplit("/", 1)[-1])
            if latency:
                time.sleep(latency)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    httpd = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=442, help="number of images to serve (default: %(default)s)")
    parser.add_argument("--source", choices=("auto", "gift-cards", "demo"), default="auto")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8], help="worker counts (default: 1 8)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        os.environ.pop(name, None)  # the server is on 127.0.0.1

    work = Path(tempfile.mkdtemp(prefix="image-bench-"))
    try:
        source, bodies = load_images(args.source, args.images, work)
        httpd = start_server(bodies, args.latency)
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        meta = work / "meta.jsonl"
        with open(meta, "w", encoding="utf-8") as f:
            for name in bodies:
                url = f"{base}/img/{name}"
                f.write(json.dumps({"parent_asin": Path(name).stem, "main_category": "Bench",
                                    "images": [{"variant": "MAIN", "thumb": url, "large": url, "hi_res": url}]})
                        + "\n")
        runs = []
        for workers in args.workers:
            dataset = work / f"ds-{workers}"
            dataset.mkdir()
            report = download_images(dataset, [meta], workers=workers, size=args.size, progress=False)
            runs.append({"workers": workers, "ok": report.ok, "failed": report.failed,
                         "seconds": round(report.seconds, 3), "images_per_s": round(report.images_per_s, 1)})
            shutil.rmtree(dataset)
        httpd.shutdown()
        httpd.server_close()
        mean_kb = sum(map(len, bodies.values())) / max(1, len(bodies)) / 1024
        print(json.dumps({
            "source": source, "images": len(bodies), "mean_kb": round(mean_kb, 1),
            "latency_s": args.latency, "size": args.size, "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(), "runs": runs}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
