"""Converter at scale on an Electronics-like review file, with a projection to Amazon Electronics 2023.

    python benchmarks/scale.py --reviews 1000000
    python benchmarks/scale.py --reviews 5000000

Generates (once, cached in ``--work``) an Amazon 2023-format ``reviews.jsonl.gz`` + ``meta.jsonl.gz`` of exactly
``--reviews`` reviews shaped like Electronics: users and items in the Electronics 2023 ratios (43.9M reviews,
18.3M users, 1.6M items), per-user review counts from a power law (most users have 1-2 reviews, a few have
hundreds), Zipf-like item popularity, review texts of 200-400 characters, real-length ids. Then runs
``python -m dataset_converters convert`` on it in a child process (``--k-core``, sidecars on) and reports the
input size, wall time, the child's peak RSS, the per-stage timings from ``<ds>.stats.json``, what was kept, and a
projection to Electronics 2023. The report goes to stdout as JSON and to ``benchmarks/results/scale-<N>.json``.

Projection: each stage's time is scaled linearly in reviews. Peak RSS is modelled as
``a + b * reviews + c * distinct_users``; the generator keeps users / reviews at the Electronics ratio, so
runs at two sizes identify ``a`` and ``beta = b + c * users_per_review`` (not ``b`` and ``c`` apart), and the
projection holds for data with Electronics' users / reviews ratio. The same fit on each stage's "peak so far"
shows which stage reaches the peak. With the results of one size only, the projection is proportional
(``a = 0``), an upper bound when there is a fixed part.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from reporting import emit

ELECTRONICS = {"reviews": 43_900_000, "users": 18_300_000, "items": 1_600_000}
T0_MS, T1_MS = 1_420_070_400_000, 1_693_526_400_000  # 2015-01-01 .. 2023-09-01 UTC
MAX_PER_USER = 2000
ITEM_ZIPF_S, ITEM_ZIPF_OFFSET = 1.0, 50
TEXT_POOL = 200_000
CHUNK = 250_000
REVIEW_LINE = ('{"rating": %.1f, "title": "%s", "text": "%s", "images": [], "asin": "%s", "parent_asin": "%s", '
               '"user_id": "%s", "timestamp": %d, "helpful_vote": %d, "verified_purchase": %s}\n')


# --------------------------------------------------------------------------- generation


def _power_law_counts(rng, n_total: int, mean: float, kmax: int):
    """Per-user review counts, P(k) ~ k^-alpha on 1..kmax with the given mean, summing to exactly n_total."""
    import numpy as np

    k = np.arange(1, kmax + 1, dtype=np.float64)

    def pmf(alpha):
        w = k ** -alpha
        return w / w.sum()

    lo, hi = 1.01, 6.0
    for _ in range(60):  # the mean falls as alpha grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (pmf(mid) * k).sum() > mean else (lo, mid)
    alpha = (lo + hi) / 2
    counts = rng.choice(np.arange(1, kmax + 1), size=int(n_total / mean * 1.1) + 10, p=pmf(alpha))
    cum = np.cumsum(counts)
    n_users = int(np.searchsorted(cum, n_total)) + 1
    counts = counts[:n_users]
    counts[-1] -= int(cum[n_users - 1] - n_total)
    return counts, alpha


def _ids(rng, n: int, prefix: str, length: int, alphabet: bytes):
    import numpy as np

    while True:
        raw = np.frombuffer(alphabet, dtype=np.uint8)[rng.integers(0, len(alphabet), size=(n, length))]
        ids = [prefix + s.decode() for s in raw.view(f"S{length}").ravel().tolist()]
        if len(set(ids)) == n:
            return ids


def _texts(rng, words, n: int, lo: int, hi: int):
    """n sentence-like strings of lo..hi characters from the word list (ASCII, nothing to escape in JSON)."""
    import numpy as np

    words = np.array(words, dtype=object)
    mean_len = sum(len(w) + 1 for w in words) / len(words)
    per = int(hi / mean_len) + 4
    idx = rng.integers(0, len(words), size=(n, per))
    target = rng.integers(lo, hi + 1, size=n).tolist()
    out = []
    for row, t in zip(words[idx].tolist(), target):
        s = " ".join(row)[:t].rsplit(" ", 1)[0]
        out.append(s[:1].upper() + s[1:] + ".")
    return out


def generate(root: Path, n_reviews: int, seed: int = 0) -> dict:
    """Write ``root/reviews.jsonl.gz`` and ``root/meta.jsonl.gz``; returns what was generated."""
    import numpy as np

    from dataset_converters.demo import topic_specs

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    topics = topic_specs()
    words = [w for t in topics for w in t.words] + ("great good works fine product quality price cable battery "
                                                     "sound screen charger fast slow easy recommend would again "
                                                     "the and it this for with not but very was is".split())
    mean_per_user = ELECTRONICS["reviews"] / ELECTRONICS["users"]
    counts, alpha = _power_law_counts(rng, n_reviews, mean_per_user, min(MAX_PER_USER, max(50, n_reviews // 500)))
    n_users = len(counts)
    n_items = max(100, round(n_reviews * ELECTRONICS["items"] / ELECTRONICS["reviews"]))

    user = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    pop = (np.arange(n_items) + ITEM_ZIPF_OFFSET) ** -ITEM_ZIPF_S
    cdf = np.cumsum(pop / pop.sum())
    item = rng.permutation(n_items)[np.minimum(np.searchsorted(cdf, rng.random(n_reviews)), n_items - 1)]
    ts = rng.integers(T0_MS, T1_MS, size=n_reviews)
    order = np.argsort(ts, kind="stable")  # the dumps interleave users
    user, item, ts = user[order], item[order], ts[order]
    rating = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], size=n_reviews, p=[0.08, 0.05, 0.08, 0.17, 0.62])
    votes = np.minimum(rng.geometric(0.6, size=n_reviews) - 1, 500)
    verified = rng.random(n_reviews) < 0.9

    user_ids = _ids(rng, n_users, "A", 27, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    item_ids = _ids(rng, n_items, "B0", 8, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    body = _texts(rng, words, TEXT_POOL, 200, 400)
    heads = _texts(rng, words, TEXT_POOL // 10, 10, 60)
    body_pick = rng.integers(0, len(body), size=n_reviews)
    head_pick = rng.integers(0, len(heads), size=n_reviews)

    tmp = root / "reviews.jsonl.gz.part"
    with gzip.open(tmp, "wb", compresslevel=1) as f:
        for c in range(0, n_reviews, CHUNK):
            s = slice(c, c + CHUNK)
            f.write("".join(
                REVIEW_LINE % (r, heads[h], body[b], item_ids[i], item_ids[i], user_ids[u], t, v,
                               "true" if ok else "false")
                for r, h, b, i, u, t, v, ok in zip(rating[s].tolist(), head_pick[s].tolist(), body_pick[s].tolist(),
                                                   item[s].tolist(), user[s].tolist(), ts[s].tolist(),
                                                   votes[s].tolist(), verified[s].tolist())).encode())
    os.replace(tmp, root / "reviews.jsonl.gz")

    titles = _texts(rng, words, n_items, 40, 120)
    feats = _texts(rng, words, 20_000, 30, 120)
    descs = _texts(rng, words, 20_000, 100, 400)
    tmp = root / "meta.jsonl.gz.part"
    with gzip.open(tmp, "wb", compresslevel=1) as f:
        lines = []
        for i, asin in enumerate(item_ids):
            t = topics[i % len(topics)]
            n_img = int(rng.integers(0, 4))
            lines.append(json.dumps({
                "main_category": "All Electronics", "title": titles[i],
                "average_rating": round(float(rng.uniform(2.5, 5.0)), 1), "rating_number": int(rng.integers(1, 5000)),
                "features": [feats[j] for j in rng.integers(0, len(feats), size=int(rng.integers(0, 6))).tolist()],
                "description": [descs[j] for j in rng.integers(0, len(descs), size=int(rng.integers(0, 3))).tolist()],
                "price": None if rng.random() < 0.3 else round(float(rng.uniform(5, 500)), 2),
                "images": [{"thumb": f"https://m.media-amazon.com/images/I/{asin}{k}._SS40_.jpg",
                            "large": f"https://m.media-amazon.com/images/I/{asin}{k}.jpg",
                            "variant": "MAIN" if k == 0 else f"PT0{k}",
                            "hi_res": f"https://m.media-amazon.com/images/I/{asin}{k}._SL1500_.jpg"}
                           for k in range(n_img)],
                "videos": [], "store": t.stores[i % len(t.stores)],
                "categories": ["Electronics"] + list(t.categories[1:]),
                "details": {"Brand": t.stores[i % len(t.stores)], "Item Weight": f"{(i % 97) / 10 + 0.1:.1f} ounces"},
                "parent_asin": asin, "bought_together": None,
            }) + "\n")
            if len(lines) == CHUNK:
                f.write("".join(lines).encode())
                lines = []
        f.write("".join(lines).encode())
    os.replace(tmp, root / "meta.jsonl.gz")

    info = {
        "reviews": n_reviews, "users": n_users, "items": n_items,
        "items_reviewed": int(len(np.unique(item))),
        "users_per_review": round(n_users / n_reviews, 4),
        "user_count_power_law_alpha": round(alpha, 3), "max_reviews_per_user": int(counts.max()),
        "share_users_1_2_reviews": round(float((counts <= 2).mean()), 3),
        "share_users_5plus_reviews": round(float((counts >= 5).mean()), 3),
        "item_popularity": f"Zipf s={ITEM_ZIPF_S}, rank offset {ITEM_ZIPF_OFFSET}",
        "max_reviews_per_item": int(np.bincount(item).max()),
        "review_text_chars": [200, 400], "gzip_level": 1, "seed": seed,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (root / "generated.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# --------------------------------------------------------------------------- measurement and projection


def run_converter(reviews: Path, meta: Path, out_dir: Path, dataset: str, k_core: int):
    """Run the converter command in a child; ``(wall seconds, the child's peak RSS in MiB)``."""
    command = [sys.executable, "-m", "dataset_converters", "convert", "--reviews", str(reviews), "--meta", str(meta),
               "--dataset", dataset, "--out", str(out_dir), "--k-core", str(k_core), "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN covers all children)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"the converter failed with exit status {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024


def project(report: dict, results_dir: Path) -> dict:
    """Electronics 2023 projection from this run and, for memory, the run of another size if there is one."""
    n = report["counts"]["reviews_parsed"]
    factor = ELECTRONICS["reviews"] / n
    stages = {s["stage"]: round(s["seconds"] * factor, 1) for s in report["timings"]["stages"]}
    total = round(report["wall_seconds"] * factor, 1)
    others = []
    for p in sorted(results_dir.glob("scale-*.json")):
        r = json.loads(p.read_text())
        if r.get("reviews") != report["reviews"] and "peak_rss_mib" in r:
            others.append(r)
    upr = report["generated"]["users_per_review"]
    out = {
        "target": dict(ELECTRONICS, name="Amazon Reviews 2023, Electronics"),
        "time_model": "each stage's seconds x (43.9M / reviews parsed here); same machine, one process",
        "seconds_by_stage": stages,
        "seconds_total": total,
        "hours_total": round(total / 3600, 2),
    }
    if others:
        other = max(others, key=lambda r: abs(r["reviews"] - report["reviews"]))
        n0, m0, m1 = other["counts"]["reviews_parsed"], other["peak_rss_mib"], report["peak_rss_mib"]
        beta = (m1 - m0) / (n - n0)
        a = m1 - beta * n
        out["memory_model"] = (f"peak_rss_mib = a + b*reviews + c*distinct_users; users/reviews fixed at {upr} "
                               f"(Electronics: {ELECTRONICS['users'] / ELECTRONICS['reviews']:.3f}), so "
                               f"peak = a + beta*reviews with beta = b + c*{upr}, fitted on {n0:,} and {n:,} reviews")
        out["memory_fit"] = {"a_mib": round(a, 1), "beta_kib_per_review": round(beta * 1024, 3),
                             "from": [{"reviews": n0, "peak_rss_mib": m0}, {"reviews": n, "peak_rss_mib": m1}]}
        peak = a + beta * ELECTRONICS["reviews"]
        m0s = {o["stage"]: o["peak_rss_mib"] for o in other["timings"]["stages"]}
        out["peak_rss_gib_by_stage"] = {  # the same fit on each stage's peak so far: where the peak is reached
            s["stage"]: round((s["peak_rss_mib"] + (s["peak_rss_mib"] - m0s[s["stage"]]) / (n - n0)
                               * (ELECTRONICS["reviews"] - n)) / 1024, 1)
            for s in report["timings"]["stages"] if s["stage"] in m0s}
        out["stage_time_scaling_exponent"] = {  # 1.0 = linear in reviews
            s["stage"]: round(math.log(max(s["seconds"], 1e-3) / max(o["seconds"], 1e-3)) / math.log(n / n0), 2)
            for s in report["timings"]["stages"] for o in other["timings"]["stages"] if o["stage"] == s["stage"]}
    else:
        out["memory_model"] = "peak_rss_mib proportional to reviews (one size measured; a = 0, an upper bound)"
        peak = report["peak_rss_mib"] * factor
    out["peak_rss_gib"] = round(peak / 1024, 1)
    out["fits_24_gib"] = bool(peak / 1024 < 24)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", type=int, default=5_000_000, help="number of reviews")
    parser.add_argument("--k-core", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work"), help="folder for generated files")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"), help="folder for the reports")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    raw = args.work / f"scale-{args.reviews}"
    reviews, meta, info = raw / "reviews.jsonl.gz", raw / "meta.jsonl.gz", raw / "generated.json"
    if args.generate_only:
        generate(raw, args.reviews)
        return 0
    if not (reviews.is_file() and meta.is_file() and info.is_file()):
        # in a child, so that this process stays small for the measured one
        subprocess.run([sys.executable, __file__, "--reviews", str(args.reviews), "--work", str(args.work),
                        "--generate-only"], check=True)
    generated = json.loads(info.read_text())
    print(f"input: {generated}", file=sys.stderr)

    dataset = f"scale-{args.reviews}"
    out_dir = args.work / "dataset"
    seconds, peak_mib = run_converter(reviews, meta, out_dir, dataset, args.k_core)
    stats = json.loads((out_dir / dataset / f"{dataset}.stats.json").read_text())
    c = stats["counts"]
    report = {
        "reviews": args.reviews,
        "generated": generated,
        "input_bytes": {"reviews": reviews.stat().st_size, "meta": meta.stat().st_size},
        "k_core": args.k_core,
        "sidecars": True,
        "wall_seconds": round(seconds, 1),
        "reviews_per_second": round(c["reviews_parsed"] / seconds),
        "peak_rss_mib": round(peak_mib, 1),
        "timings": stats["timings"],
        "counts": {k: c[k] for k in ("records_read", "reviews_parsed", "duplicates_dropped", "removed_by_k_core",
                                     "meta_records_read")},
        "kept": {k: c[k] for k in ("users", "items", "interactions")},
        "python": platform.python_version(),
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count(),
                    "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)},
    }
    report["projection"] = project(report, args.results)
    emit(report, args.results / f"scale-{args.reviews}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
