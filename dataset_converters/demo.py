"""Deterministic synthetic dataset in the Amazon Reviews 2023 format.

``generate_demo`` writes ``reviews.jsonl.gz``, ``meta.jsonl.gz`` and ``images/<parent_asin>.jpg`` with the field
names of the real dumps, so the converters and models run end to end without downloads.  The data is not noise:
every modality carries the same planted signal.

* Latent topics ("kitchen", "hiking", ...), each with a disjoint vocabulary of product words, a category path, a
  colour palette and an image shape.  Every item has one main topic; some have a minor secondary topic.
* Text: titles, features and descriptions are mostly main-topic words plus generic filler; review texts use the
  item's topic words and a sentiment phrase that matches the star rating.
* Images: topic background and shape colours and the topic's shape, with per-image jitter of colour, position,
  size, rotation and pixel noise.
* Item graph: ``bought_together`` partners mostly share the item's topic.
* Users: a sparse topic preference (1-3 dominant topics); items are drawn by preference x Zipf-like popularity;
  some consecutive purchases follow the co-purchase graph (a sequential signal); ratings rise with the user's
  affinity for the item's topic and the item's hidden quality.
* Gaps as in real data: missing images, descriptions, prices, ``bought_together`` lists and review texts at
  configurable rates, and ~1% repeated (user, item) reviews so deduplication gets exercised.

Same arguments give byte-identical files (image URLs embed the absolute output path, so those differ between
folders).  With ``write_images=False`` no JPEG is written and every item's ``images`` list is empty; all else is
identical to the run with images.  ``topic_specs`` exposes the ground truth (vocabularies, category leaves).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .demo_images import SHAPES, draw_item_image

logger = logging.getLogger(__name__)

__all__ = ["DemoFiles", "Topic", "generate_demo", "topic_specs"]


@dataclass(frozen=True)
class DemoFiles:
    root: Path          # the folder written
    reviews: Path       # root / "reviews.jsonl.gz"
    meta: Path          # root / "meta.jsonl.gz"
    images_dir: Path    # root / "images"


@dataclass(frozen=True)
class Topic:
    name: str
    main_category: str
    categories: tuple[str, ...]   # category path; the leaf is unique per topic
    words: tuple[str, ...]        # lower-case, disjoint across topics
    background: tuple[int, int, int]
    foreground: tuple[int, int, int]
    shape: str
    base_price: float
    stores: tuple[str, ...]       # brand names used by this topic's items


N_WORDS = 30
_BASE_TOPICS = (  # name, main_category, category path, background, foreground, typical price, words
    ("kitchen", "Amazon Home", ("Home & Kitchen", "Kitchen & Dining", "Cookware"),
     (238, 226, 200), (200, 40, 40), 25.0, "spatula skillet whisk colander ladle saucepan cutlery knife grater "
     "peeler tongs kettle teapot blender toaster bakeware apron cookware stockpot strainer mandoline trivet oven "
     "mitts nonstick casserole wok utensil cutting dishwasher"),
    ("hiking", "Sports & Outdoors", ("Sports & Outdoors", "Outdoor Recreation", "Hiking Gear"),
     (52, 84, 52), (240, 140, 30), 45.0, "backpack trekking poles tent sleeping compass headlamp carabiner "
     "hydration canteen trail boots gaiters waterproof rucksack bivy tarp camping hammock paracord lantern "
     "firestarter merino windbreaker crampons rainfly summit multitool thermos backcountry"),
    ("makeup", "All Beauty", ("Beauty & Personal Care", "Makeup", "Face Makeup"),
     (242, 188, 208), (120, 30, 130), 15.0, "lipstick mascara eyeliner foundation concealer blush bronzer contour "
     "primer eyeshadow lipgloss brushes sponge powder matte shimmer lashes brow serum moisturizer cleanser micellar "
     "makeup cosmetic glitter nail polish beauty spf lipliner"),
    ("audio", "All Electronics", ("Electronics", "Headphones & Audio", "Speakers"),
     (28, 28, 36), (40, 210, 230), 60.0, "headphones earbuds speaker bluetooth wireless amplifier subwoofer "
     "soundbar microphone turntable vinyl stereo receiver woofer tweeter headset earphones noise cancelling bass "
     "audio aux dac preamp studio hifi equalizer karaoke podcast decibel"),
    ("garden", "Amazon Home", ("Patio, Lawn & Garden", "Gardening & Lawn Care", "Garden Tools"),
     (150, 200, 110), (110, 70, 30), 30.0, "shovel trowel pruner hose sprinkler planter seeds fertilizer compost "
     "mulch rake hoe wheelbarrow trellis greenhouse gloves watering soil weeder shears lawn mower seedling "
     "perennial herb birdbath gardening irrigation topiary potting"),
    ("toys", "Toys & Games", ("Toys & Games", "Learning & Education", "Building Toys"),
     (250, 218, 60), (30, 70, 200), 20.0, "puzzle blocks doll dollhouse plush teddy bricks action figure racetrack "
     "playset kids toddler crayons stuffed marbles yoyo kite train robot slime boardgame dinosaur unicorn rattle "
     "stacking educational montessori pretend playdough"),
    ("office", "Office Products", ("Office Products", "Office & School Supplies", "Desk Accessories"),
     (196, 198, 210), (20, 30, 100), 12.0, "stapler notebook binder folder paperclips pens pencils highlighter "
     "markers envelopes labels calendar planner desk organizer clipboard whiteboard eraser sticky notes printer "
     "toner ink scissors tape dispenser filing cabinet ledger ballpoint"),
    ("pets", "Pet Supplies", ("Pet Supplies", "Dogs & Cats", "Toys & Accessories"),
     (186, 140, 92), (250, 250, 245), 18.0, "dog cat leash collar harness kibble litter scratching chew treats "
     "aquarium fish hamster cage bird grooming flea kennel crate catnip pet puppy kitten squeaky fetch terrarium "
     "reptile feeder parakeet tick"),
    ("fitness", "Sports & Outdoors", ("Sports & Outdoors", "Exercise & Fitness", "Strength Training"),
     (40, 70, 160), (170, 230, 40), 35.0, "dumbbell kettlebell yoga mat resistance bands treadmill protein shaker "
     "jump rope foam roller barbell weights plates pullup gym workout exercise stretching ab sweatband elliptical "
     "rowing spin pilates training athletic cardio"),
    ("baby", "Baby", ("Baby Products", "Nursery", "Baby Care"),
     (190, 226, 246), (235, 90, 150), 22.0, "diaper pacifier stroller crib bib onesie swaddle bottle teether "
     "highchair wipes carrier bassinet playpen burp nursery infant newborn formula sippy changing lullaby booster "
     "carseat babyproof rocker bouncer teething nightlight romper"),
)
_GENERIC = "premium deluxe classic essential pro ultra compact durable lightweight everyday original value".split()
_PACKS = ("Set", "Pack", "Kit", "Bundle", "Collection", "Edition")
_SIZES = ("2 Pack", "3 Pack", "Set of 4", "6 Count", "12 Inch", "Large", "Medium", "Small", "500ml")
_SYL_A = ("vel", "kin", "nor", "bra", "sol", "tam", "zen", "lum", "ori", "cas", "dal", "fen")
_SYL_B = ("ora", "taro", "wick", "ston", "ella", "ify", "ant", "ix", "ova", "ando", "eru", "ly")
_COLOURS = ("Black", "White", "Grey", "Blue", "Red", "Green", "Pink", "Beige", "Multicolor")
_REVIEW_TITLES = (  # index: stars - 1
    ("One Star", "Terrible", "Waste of money", "Broke quickly", "Do not buy this {a}"),
    ("Two Stars", "Disappointed", "Not great", "Could be better", "Flimsy {a}"),
    ("Three Stars", "It's okay", "Average", "Decent for the price", "Okay {a}"),
    ("Four Stars", "Very good", "Solid {a}", "Pretty good", "Nice {a}"),
    ("Five Stars", "Love it!", "Excellent", "Highly recommend", "Perfect {a}"),
)
_SENTIMENT = (
    ("Terrible, I returned it.", "Complete waste of money.", "Broke after a week.", "Do not buy."),
    ("Pretty disappointed.", "Not what I expected.", "Quality is lacking.", "Would not buy again."),
    ("It's okay.", "Does the job, nothing special.", "Mixed feelings about this one.", "Average quality."),
    ("Really good overall.", "Works well, minor quibbles.", "Happy with this purchase.", "Good value."),
    ("Absolutely love it!", "Exceeded my expectations.", "Best purchase this year.", "Couldn't be happier."),
)
_REVIEW_BODIES = ("{s} Bought this {a} to go with my {b} and {c}.",
                  "{s} The {a} is exactly what I expected for the {b}.",
                  "{s} Compared to my old {a}, this one pairs better with the {b}.",
                  "{s} I use the {a} every week along with a {b} and {c}.")
_FEATURES = ("Ideal {a} for everyday use", "Works with most {a} and {b} accessories", "Includes {n} {a} pieces",
             "Easy to clean and store", "{G} {a} design with {b} support", "Backed by a 1-year {a} warranty")
_DESCRIPTIONS = ("This {a} from {store} pairs well with any {b}.", "Upgrade your {a} with this {g} {b} that lasts.",
                 "The {g} choice for anyone who needs a {a}, {b} or {c}.")
_T0_MS, _T1_MS = 1_420_070_400_000, 1_693_526_400_000  # 2015-01-01 .. 2023-09-01 UTC
_MIN_PER_USER = 5
_EXPLORE_RATE = 0.05     # interactions drawn from a uniformly random topic
_CROSS_TOPIC_BT = 0.15   # bought_together partners from another topic
_SECONDARY_RATE = 0.15   # items with a minor secondary topic


def topic_specs(n_topics: int = 8) -> tuple[Topic, ...]:
    """Ground-truth topics; beyond the built-in lists they are cycled with a numeric suffix."""
    out = []
    for k in range(n_topics):
        name, main, cats, bg, fg, price, words = _BASE_TOPICS[k % len(_BASE_TOPICS)]
        rnd = k // len(_BASE_TOPICS)
        sfx = str(rnd + 1) if rnd else ""
        # Rotating colour channels keeps cycled topics visually distinct from their base.
        out.append(Topic(
            name=name + sfx, main_category=main,
            categories=cats[:-1] + (f"{cats[-1]} {sfx}".strip(),),
            words=tuple(w + sfx for w in words.split()[:N_WORDS]),
            background=tuple(np.roll(bg, rnd).tolist()), foreground=tuple(np.roll(fg, rnd).tolist()),
            shape=SHAPES[(k + rnd) % len(SHAPES)], base_price=price,
            stores=tuple((_SYL_A[(5 * k + 3 * j) % 12] + _SYL_B[(7 * k + j) % 12]).capitalize()
                         for j in range(4))))
    return tuple(out)


def _random_ids(rng, n: int, prefix: bytes, length: int, taken: set[str]) -> list[str]:
    alphabet = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", dtype=np.uint8)
    out: list[str] = []
    while len(out) < n:
        m = n - len(out)
        arr = np.empty((m, length), dtype=np.uint8)
        arr[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
        arr[:, len(prefix):] = alphabet[rng.integers(0, len(alphabet), (m, length - len(prefix)))]
        for s in arr.view(f"S{length}").ravel().astype(f"U{length}").tolist():
            if s not in taken:
                taken.add(s)
                out.append(s)
    return out


def _topic_item_cdf(main, secondary, pop, n_topics):
    """Concatenated per-topic item CDFs, shifted so topic t occupies (t, t+1]."""
    has_sec = secondary >= 0
    t = np.concatenate([main, secondary[has_sec]])
    ids = np.concatenate([np.arange(len(main)), np.flatnonzero(has_sec)])
    w = np.concatenate([pop, 0.3 * pop[has_sec]])  # secondary membership is weaker
    order = np.lexsort((ids, t))
    t, ids, w = t[order], ids[order], w[order]
    tot = np.bincount(t, weights=w, minlength=n_topics)
    cum = np.cumsum(w)
    before = np.concatenate([[0.0], np.cumsum(tot)[:-1]])
    cdf = (cum - before[t]) / tot[t] + t
    last = np.r_[t[1:] != t[:-1], True]
    cdf[last] = t[last] + 1.0
    return cdf, ids


def _draw_items(rng, cdf, ids, topics):
    pos = np.searchsorted(cdf, topics + rng.random(len(topics)), side="right")
    return ids[np.minimum(pos, len(ids) - 1)]


def _draw_topics(rng, pref_flat, n_topics, users):
    t = np.searchsorted(pref_flat, users + rng.random(len(users)), side="right") - users * n_topics
    t = np.clip(t, 0, n_topics - 1)
    explore = rng.random(len(users)) < _EXPLORE_RATE
    t[explore] = rng.integers(0, n_topics, int(explore.sum()))
    return t


def generate_demo(out_dir, *, n_users=2000, n_items=1000, n_topics=8, seed=0, image_size=96, write_images=True,
                  progress=False, mean_interactions=11.0, missing_image_rate=0.10, missing_description_rate=0.15,
                  missing_bought_together_rate=0.20, missing_price_rate=0.03, missing_hi_res_rate=0.15,
                  empty_review_text_rate=0.10, duplicate_rate=0.01, sequential_rate=0.25,
                  chunk_size=50_000) -> DemoFiles:
    """Write a synthetic Amazon Reviews 2023-style dataset into ``out_dir`` and return its paths.

    ``n_users`` reviewers and ``n_items`` products over ``n_topics`` latent topics.  Each user writes at least
    5 reviews and ``mean_interactions`` on average (heavy-tailed), so a 5-core filter keeps most of the data.
    Fractions in [0, 1]: items without images (``missing_image_rate``), with an empty description, with
    ``bought_together: null``, with ``price: null``; image entries with ``hi_res: null`` (among items with
    images); reviews with an empty text; reviews repeating an earlier (user, item) pair (``duplicate_rate``);
    the chance that a purchase is a co-purchase partner of the user's previous one (``sequential_rate``).
    Reviews are built and written ``chunk_size`` at a time.  ``progress`` shows tqdm bars.
    """
    if n_topics < 1 or n_users < 1 or n_items < max(n_topics, 20):
        raise ValueError("need n_topics >= 1, n_users >= 1 and n_items >= max(n_topics, 20)")
    if image_size < 16 or mean_interactions < _MIN_PER_USER or chunk_size < 1:
        raise ValueError(f"need image_size >= 16, mean_interactions >= {_MIN_PER_USER} and chunk_size >= 1")
    rates = dict(missing_image_rate=missing_image_rate, missing_description_rate=missing_description_rate,
                 missing_bought_together_rate=missing_bought_together_rate, missing_price_rate=missing_price_rate,
                 missing_hi_res_rate=missing_hi_res_rate, empty_review_text_rate=empty_review_text_rate,
                 duplicate_rate=duplicate_rate, sequential_rate=sequential_rate)
    for name, value in rates.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    from tqdm.auto import tqdm

    root = Path(out_dir).expanduser().resolve()
    files = DemoFiles(root, root / "reviews.jsonl.gz", root / "meta.jsonl.gz", root / "images")
    files.images_dir.mkdir(parents=True, exist_ok=True)
    # A half-rewritten folder must not keep a complete-looking old dataset.
    files.reviews.unlink(missing_ok=True)
    files.meta.unlink(missing_ok=True)
    # Independent streams keep e.g. the reviews unchanged when images are skipped.
    r_item, r_user, r_inter, r_text, r_img, r_meta = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6))
    topics = topic_specs(n_topics)
    it = _make_items(r_item, n_items, n_topics, topics, rates)
    ev = _make_reviews(r_user, r_inter, it, n_users, n_topics, mean_interactions, rates)
    logger.info("demo: %d users, %d items, %d reviews, %d topics", n_users, n_items, len(ev.user), n_topics)

    image_urls: dict[int, str] = {}
    if write_images:
        for i in tqdm(np.flatnonzero(it.has_image).tolist(), desc="demo images", disable=not progress):
            tp = topics[it.main[i]]
            final = files.images_dir / f"{it.asins[i]}.jpg"
            tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
            tmp.write_bytes(draw_item_image(r_img, image_size, tp.background, tp.foreground, tp.shape))
            os.replace(tmp, final)
            image_urls[i] = final.as_uri()

    # Both line files go to temp names and are renamed only once both are complete.
    tmp_reviews = files.reviews.with_name(f".{files.reviews.name}.{os.getpid()}.tmp")
    tmp_meta = files.meta.with_name(f".{files.meta.name}.{os.getpid()}.tmp")
    try:
        with _gz_writer(tmp_reviews) as gz, tqdm(total=len(ev.user), desc="demo reviews", unit="review",
                                                 disable=not progress) as bar:
            for lines in _review_lines(r_text, it, ev, topics, empty_review_text_rate, chunk_size):
                gz.write(("\n".join(lines) + "\n").encode("utf-8"))
                bar.update(len(lines))
        with _gz_writer(tmp_meta) as gz:
            for lines in _meta_lines(r_meta, it, ev, topics, image_urls, chunk_size):
                gz.write(("\n".join(lines) + "\n").encode("utf-8"))
        os.replace(tmp_reviews, files.reviews)
        os.replace(tmp_meta, files.meta)
    finally:
        tmp_reviews.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    logger.debug("demo dataset written to %s", root)
    return files


def _make_items(rng, n_items, T, topics, rates) -> SimpleNamespace:
    main = np.concatenate([np.arange(T), rng.choice(T, n_items - T, p=rng.dirichlet(np.full(T, 4.0)))])
    main = rng.permutation(main)  # every topic has at least one item
    secondary = np.full(n_items, -1)
    if T > 1:
        has_sec = rng.random(n_items) < _SECONDARY_RATE
        secondary[has_sec] = (main[has_sec] + rng.integers(1, T, int(has_sec.sum()))) % T
    pop = (rng.permutation(n_items) + 10.0) ** -0.8  # Zipf-like; the offset keeps the tail reviewable
    price = np.round(np.exp(rng.normal(np.log([t.base_price for t in topics])[main], 0.5)), 2)
    price[rng.random(n_items) < rates["missing_price_rate"]] = np.nan
    taken: set[str] = set()
    asins = _random_ids(rng, n_items, b"B0", 10, taken)
    # A quarter of the products come in 2-3 variants, each with its own review "asin".
    var_n = np.where(rng.random(n_items) < 0.25, rng.integers(2, 4, n_items), 1)
    extra = iter(_random_ids(rng, int(var_n[var_n > 1].sum()), b"B0", 10, taken))
    var_ids = [a if k == 1 else next(extra) for a, k in zip(asins, var_n.tolist()) for _ in range(k)]
    cdf, cdf_ids = _topic_item_cdf(main, secondary, pop, T)

    # Hidden co-purchase graph: meta shows it except for bt_null items; purchase sequences always follow it.
    src = np.repeat(np.arange(n_items), rng.integers(1, 5, n_items))
    bt_topic = np.where(rng.random(len(src)) < _CROSS_TOPIC_BT, rng.integers(0, T, len(src)), main[src])
    partners: list[list[int]] = [[] for _ in range(n_items)]
    for s, c in zip(src.tolist(), _draw_items(rng, cdf, cdf_ids, bt_topic).tolist()):
        if c != s and c not in partners[s]:
            partners[s].append(c)
    for s in [s for s, p in enumerate(partners) if not p]:  # every draw hit the item itself
        pool = np.flatnonzero((main == main[s]) & (np.arange(n_items) != s))
        pool = pool if len(pool) else np.flatnonzero(np.arange(n_items) != s)
        partners[s].append(int(pool[rng.integers(len(pool))]))
    part_pad = np.zeros((n_items, 4), dtype=np.int64)
    for i, p in enumerate(partners):
        part_pad[i, : len(p)] = p
    return SimpleNamespace(
        main=main, secondary=secondary, cdf=cdf, cdf_ids=cdf_ids, asins=asins, var_ids=var_ids, var_n=var_n,
        var_start=np.cumsum(var_n) - var_n, quality=rng.normal(0.0, 0.4, n_items), price=price,
        partners=partners, part_pad=part_pad, n_part=np.array([len(p) for p in partners]),
        has_image=rng.random(n_items) >= rates["missing_image_rate"],
        hires_null=rng.random(n_items) < rates["missing_hi_res_rate"],
        desc_missing=rng.random(n_items) < rates["missing_description_rate"],
        bt_null=rng.random(n_items) < rates["missing_bought_together_rate"])


def _make_reviews(r_user, rng, it, n_users, T, mean_interactions, rates) -> SimpleNamespace:
    n_items = len(it.main)
    # Amazon 2023 user ids look like "AE3KLV...": "A", one of E-H, then 26 more characters.
    second = np.array(list("EFGH"))[r_user.integers(0, 4, n_users)].tolist()
    user_ids = ["A" + c + u[1:] for c, u in zip(second, _random_ids(r_user, n_users, b"A", 27, set()))]
    k_dom = np.minimum(r_user.choice([1, 2, 3], n_users, p=[0.45, 0.4, 0.15]), T)
    dominant = np.argsort(np.argsort(r_user.random((n_users, T)), axis=1), axis=1) < k_dom[:, None]
    dom = r_user.gamma(2.0, 1.0, (n_users, T)) * dominant
    back = r_user.gamma(0.3, 1.0, (n_users, T)) + 1e-12
    pref = 0.88 * dom / dom.sum(1, keepdims=True) + 0.12 * back / back.sum(1, keepdims=True)
    pref_cdf = np.cumsum(pref, axis=1)
    pref_cdf[:, -1] = 1.0
    pref_flat = (pref_cdf + np.arange(n_users)[:, None]).ravel()

    def draw(users):
        return _draw_items(rng, it.cdf, it.cdf_ids, _draw_topics(rng, pref_flat, T, users))

    cap = max(_MIN_PER_USER, min(n_items // 3, 1000))  # leaves room for distinct items per user
    mu = np.log(max(mean_interactions - _MIN_PER_USER, 1e-3)) - 0.5  # lognormal(sigma=1) mean is e^(mu + 1/2)
    extra = np.rint(rng.lognormal(mu, 1.0, n_users)).astype(np.int64) * (mean_interactions > _MIN_PER_USER)
    n_u = np.minimum(_MIN_PER_USER + extra, cap)
    user = np.repeat(np.arange(n_users), n_u)
    starts = np.cumsum(n_u) - n_u
    item = draw(user)
    follow = rng.random(len(user)) < rates["sequential_rate"]
    pick = rng.random(len(user))
    by_len = np.argsort(-n_u, kind="stable")
    for j in range(1, int(n_u.max())):  # position by position, so chains of co-purchases can form
        idx = starts[by_len[: np.searchsorted(-n_u[by_len], -j, side="left")]] + j
        prev = item[idx - 1]
        ok = follow[idx] & (it.n_part[prev] > 0)
        idx, prev = idx[ok], prev[ok]
        item[idx] = it.part_pad[prev, (pick[idx] * it.n_part[prev]).astype(np.int64)]
    for attempt in range(11):  # redraw repeated (user, item) pairs from the user's preferences
        order = np.argsort(user * n_items + item, kind="stable")
        key = (user * n_items + item)[order]
        dup = order[1:][key[1:] == key[:-1]]
        if not len(dup):
            break
        if attempt < 10:
            item[dup] = draw(user[dup])
            continue
        for d in np.sort(dup).tolist():  # narrow tastes: any unused item (cap leaves plenty)
            own = set(item[starts[user[d]]:starts[user[d]] + n_u[user[d]]].tolist())
            while item[d] in own:
                item[d] = rng.integers(n_items)
    pos = np.arange(len(user)) - starts[user]
    # Planted repeats copy the previous purchase, so they are true (user, item) duplicates.
    rep = (rng.random(len(user)) < rates["duplicate_rate"]) & (pos > 0)
    rep[1:] &= ~rep[:-1]
    item[rep] = item[np.flatnonzero(rep) - 1]
    span = (_T1_MS - _T0_MS) * rng.beta(2.0, 3.0, n_users)
    t_start = _T0_MS + rng.random(n_users) * (_T1_MS - _T0_MS - span)
    ts = (t_start[user] + rng.random(len(user)) * span[user]).astype(np.int64)
    ts = ts[np.lexsort((ts, user))] + pos  # + pos makes each user's times strictly increasing
    score = 4.0 + it.quality[item] + 1.3 * pref[user, it.main[item]] + rng.normal(0.0, 1.4, len(user))
    n = len(user)
    return SimpleNamespace(
        user_ids=user_ids, user=user, item=item, ts=ts, rating=np.clip(np.rint(score), 1, 5).astype(np.int64),
        variant=it.var_start[item] + (rng.random(n) * it.var_n[item]).astype(np.int64),
        helpful=np.where(rng.random(n) < 0.3, rng.geometric(0.35, n), 0), verified=rng.random(n) < 0.88)


def _review_lines(rng, it, ev, topics, empty_rate, chunk_size):
    vocab = np.array([t.words for t in topics], dtype=object)
    order = np.argsort(ev.ts, kind="stable")  # real dumps interleave users in time order
    for c in range(0, len(order), chunk_size):
        idx = order[c:c + chunk_size]
        m = len(idx)
        words = vocab[it.main[ev.item[idx]][:, None], rng.integers(0, N_WORDS, (m, 3))].tolist()
        cols = zip(ev.rating[idx].tolist(), rng.integers(0, 5, m).tolist(), rng.integers(0, 4, m).tolist(),
                   rng.integers(0, 4, m).tolist(), words, (rng.random(m) < empty_rate).tolist(),
                   ev.variant[idx].tolist(), ev.item[idx].tolist(), ev.user[idx].tolist(), ev.ts[idx].tolist(),
                   ev.helpful[idx].tolist(), ev.verified[idx].tolist())
        yield [json.dumps({
            "rating": float(r), "title": _REVIEW_TITLES[r - 1][ti].format(a=a),
            "text": "" if empty else _REVIEW_BODIES[bi].format(s=_SENTIMENT[r - 1][si], a=a, b=b, c=cc),
            "images": [], "asin": it.var_ids[v], "parent_asin": it.asins[i], "user_id": ev.user_ids[u],
            "timestamp": t, "helpful_vote": h, "verified_purchase": vp,
        }) for r, ti, si, bi, (a, b, cc), empty, v, i, u, t, h, vp in cols]


def _meta_lines(rng, it, ev, topics, image_urls, chunk_size):
    n_items = len(it.main)
    counts = np.bincount(ev.item, minlength=n_items)
    mean_rating = np.where(counts > 0, np.bincount(ev.item, weights=ev.rating, minlength=n_items)
                           / np.maximum(counts, 1), 4.2 + it.quality).tolist()
    # Per-item randomness is drawn in bulk: one generator call per item is several times slower.
    uniforms = rng.random((n_items, 12)).tolist()
    word_idx = np.argsort(rng.random((n_items, N_WORDS)), axis=1)[:, :8].tolist()
    feat_idx = np.argsort(rng.random((n_items, len(_FEATURES))), axis=1).tolist()
    main, secondary, prices, counts = it.main.tolist(), it.secondary.tolist(), it.price.tolist(), counts.tolist()
    for c in range(0, n_items, chunk_size):
        yield [json.dumps(_meta_record(
            uniforms[i], word_idx[i], feat_idx[i], topics[main[i]], topics[secondary[i]] if secondary[i] >= 0
            else None, it.asins[i], prices[i], image_urls.get(i), bool(it.hires_null[i]), bool(it.desc_missing[i]),
            None if it.bt_null[i] else [it.asins[p] for p in it.partners[i]], counts[i], mean_rating[i]))
            for i in range(c, min(c + chunk_size, n_items))]


@contextmanager
def _gz_writer(path: Path):
    # filename="" and mtime=0 keep the gzip header free of temp names and clocks.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                mtime=0, compresslevel=6) as gz:
        yield gz


def _meta_record(u, word_idx, feat_idx, topic, second, asin, price, url, hires_null,
                 desc_missing, bought_together, n_reviews, mean_rating):
    """One meta line; ``u`` holds this item's 12 uniforms, drawn in bulk for speed."""
    def pick(seq, x):
        return seq[int(x * len(seq))]

    k = 2 + int(u[0] * 3)
    w = [topic.words[j] for j in word_idx]
    g = pick(_GENERIC, u[1])
    store = pick(topic.stores, u[2])
    title_words = w[:k] + ([pick(second.words, u[3])] if second else [])
    title = " ".join([store, g.capitalize(), *(x.capitalize() for x in title_words),
                      pick(_PACKS, u[4])]) + ", " + pick(_SIZES, u[5])
    fmt = dict(n=2 + int(u[6] * 11), g=g, G=g.capitalize(), store=store)
    feats = [_FEATURES[j].format(a=w[2 + f % 6], b=w[3 + f % 5], **fmt)
             for f, j in enumerate(sorted(feat_idx[: 2 + int(u[7] * 4)]))]
    desc = [] if desc_missing else [_DESCRIPTIONS[j].format(a=w[j], b=w[j + 3], c=w[j + 5], **fmt)
                                    for j in range(1 + int(u[8] * 2))]
    day = datetime.fromtimestamp((_T0_MS + (u[9] * 4 - 3) * 365 * 86_400_000) / 1000, tz=timezone.utc)
    images = []
    if url is not None:
        images = [{"thumb": url, "large": url, "variant": "MAIN", "hi_res": None if hires_null else url}]
    return {
        "main_category": topic.main_category, "title": title,
        "average_rating": round(min(max(mean_rating, 1.0), 5.0), 1),
        # Real rating_number also counts ratings without a review text in the dump.
        "rating_number": n_reviews + int(u[10] * (3 * n_reviews + 1)),
        "features": feats, "description": desc,
        "price": None if price != price else price,
        "images": images, "videos": [], "store": store, "categories": list(topic.categories),
        "details": {"Brand": store, "Color": pick(_COLOURS, u[11]),
                    "Date First Available": f"{day:%B} {day.day}, {day.year}"},
        "parent_asin": asin, "bought_together": bought_together,
    }
