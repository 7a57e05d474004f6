"""Item metadata: one normalised record type for the 2023, 2018 and 2014 schemas.

===================  ===================  ==================  =========================
:class:`ItemMeta`    2023                 2018                2014
===================  ===================  ==================  =========================
item_id              parent_asin (asin)   asin                asin
title                title                title               title
store                store                brand               brand
main_category        main_category        main_cat            first of first categories
categories (paths)   [categories]         [category]          categories (list of lists)
price                price                price (string)      price
average_rating       average_rating       -                   -
description          description          description         description
features             features             feature             -
images               images               imageURL(HighRes)   imUrl
bought_together      bought_together      -                   related.bought_together
also_bought          -                    also_buy            related.also_bought
also_viewed          -                    also_view           related.also_viewed
details              details              details             -
sales_rank           -                    -                   salesRank
===================  ===================  ==================  =========================

Titles and category names are HTML-unescaped with whitespace collapsed; images
are dicts with the keys ``variant``, ``thumb``, ``large`` and ``hi_res``.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Dict, Iterable, Iterator, List, Optional, Union

from .issues import InputIssues
from .fields import checked_id, clean_id
from .records import ITEM_KEYS, PathLike, check_inputs, iter_objects

_PRICE = re.compile(r"^(?:US\s*)?[$\u00a3\u20ac]?\s*(\d{1,3}(?:,\d{3})+|\d+)?(\.\d+)?\s*(?:USD)?$")
_IMG_ALT = re.compile(r"""alt\s*=\s*["']([^"']*)["']""", re.I)


def clean_text(value) -> str:
    """HTML-unescape and collapse all whitespace (tabs, newlines, runs) to one space."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    return " ".join(html.unescape(value).split())


def category_token(name: str) -> str:
    """A category as one token: internal whitespace becomes ``_``."""
    return "_".join(name.split())


def norm_category(name: str) -> str:
    """Form used to compare category names: case-folded, ``_`` read as a space."""
    return " ".join(html.unescape(str(name)).replace("_", " ").split()).casefold()


def parse_price(value) -> Optional[float]:
    """``12.99``, ``"$12.99"``, ``"$1,299.00"`` -> float; anything else -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        p = float(value)
    elif isinstance(value, str):
        m = _PRICE.match(value.strip())
        if not m or not (m.group(1) or m.group(2)):
            return None
        p = float((m.group(1) or "0").replace(",", "") + (m.group(2) or ""))
    else:
        return None
    return p if math.isfinite(p) and p >= 0 else None


def _number(value) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _str_list(value) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, str) else str(v) for v in value if v is not None and v != ""]
    return []


def _id_list(value) -> List[str]:
    out = []
    for v in _str_list(value):
        try:
            v = clean_id(v)
        except ValueError:
            continue
        if v:
            out.append(v)
    return out


def _path(value) -> List[str]:
    return [c for c in (clean_text(v) for v in _str_list(value)) if c]


def _category_paths(value) -> List[List[str]]:
    """A list of strings is one path; a list of lists is several."""
    if not isinstance(value, (list, tuple)) or not value:
        return []
    if all(isinstance(v, (list, tuple)) for v in value):
        paths = [_path(v) for v in value]
    else:
        paths = [_path(value)]
    return [p for p in paths if p]


def _main_cat_2018(value) -> str:
    """2018 ``main_cat`` is sometimes an ``<img ... alt="AMAZON FASHION"/>`` tag."""
    if isinstance(value, str) and value.lstrip().startswith("<"):
        m = _IMG_ALT.search(value)
        return clean_text(m.group(1)) if m else ""
    return clean_text(value)


def _images_2023(value) -> List[Dict[str, Optional[str]]]:
    if isinstance(value, dict):  # column-wise form used by some Parquet exports
        keys = ("variant", "thumb", "large", "hi_res")
        cols = [value.get(k) or [] for k in keys]
        value = [dict(zip(keys, row)) for row in zip_longest(*cols)]
    out = []
    for img in value if isinstance(value, (list, tuple)) else []:
        if isinstance(img, dict):
            rec = {k: (img.get(k) if isinstance(img.get(k), str) and img.get(k) else None)
                   for k in ("variant", "thumb", "large", "hi_res")}
            if rec["thumb"] or rec["large"] or rec["hi_res"]:
                out.append(rec)
        elif isinstance(img, str) and img:
            out.append({"variant": None, "thumb": None, "large": img, "hi_res": None})
    return out


def _images_2018(small, high) -> List[Dict[str, Optional[str]]]:
    out = []
    for s, h in zip_longest(_str_list(small), _str_list(high)):
        out.append({"variant": None, "thumb": s or None, "large": None, "hi_res": h or None})
    return out


def _details(value) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, dict) else {}


@dataclass
class ItemMeta:
    """One item's metadata, whatever the schema of its file."""

    item_id: str
    schema: str  # "2023", "2018" or "2014"
    title: str = ""
    store: str = ""
    main_category: str = ""
    categories: List[List[str]] = field(default_factory=list)
    price: Optional[float] = None
    average_rating: Optional[float] = None
    rating_number: Optional[int] = None
    description: List[str] = field(default_factory=list)
    features: List[str] = field(default_factory=list)
    images: List[Dict[str, Optional[str]]] = field(default_factory=list)
    bought_together: List[str] = field(default_factory=list)
    also_bought: List[str] = field(default_factory=list)
    also_viewed: List[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    sales_rank: dict = field(default_factory=dict)
    file: str = ""
    line: int = 0

    @property
    def category_path(self) -> List[str]:
        """The deepest category path (the first one among equally deep paths)."""
        best: List[str] = []
        for p in self.categories:
            if len(p) > len(best):
                best = p
        return best

    @property
    def categories_tokens(self) -> str:
        """The deepest path as RecBole ``token_seq``: ``Beauty Hair_Care Shampoos``."""
        return " ".join(category_token(c) for c in self.category_path)

    def category_names(self) -> set:
        """Every category name this item can be filtered by (see :func:`norm_category`)."""
        names = {norm_category(c) for p in self.categories for c in p}
        if self.main_category:
            names.add(norm_category(self.main_category))
        names.discard("")
        return names

    def image_urls(self, prefer=("hi_res", "large", "thumb")) -> List[str]:
        """One URL per image, the first available size in ``prefer`` order."""
        out = []
        for img in self.images:
            url = next((img.get(k) for k in prefer if img.get(k)), None)
            if url:
                out.append(url)
        return out


def _schema(obj: dict) -> str:
    if "parent_asin" in obj or "main_category" in obj or "average_rating" in obj or "store" in obj:
        return "2023"
    if "main_cat" in obj or "category" in obj or "also_buy" in obj or "imageURL" in obj or "feature" in obj:
        return "2018"
    return "2014"


def parse_meta(obj: dict, file: str = "", line: int = 0, issues: Optional[InputIssues] = None) -> Optional[ItemMeta]:
    """Normalise one metadata object; report and return None when it has no usable id."""
    issues = issues if issues is not None else InputIssues()
    item_id = checked_id(obj, ITEM_KEYS, issues, file, line)
    if item_id is None:
        return None
    schema = _schema(obj)
    m = ItemMeta(item_id=item_id, schema=schema, file=file, line=line)
    m.title = clean_text(obj.get("title"))
    m.price = parse_price(obj.get("price"))
    m.description = _str_list(obj.get("description"))
    if schema == "2023":
        m.store = clean_text(obj.get("store") or obj.get("brand"))
        m.main_category = clean_text(obj.get("main_category"))
        m.categories = _category_paths(obj.get("categories"))
        m.average_rating = _number(obj.get("average_rating"))
        n = _number(obj.get("rating_number"))
        m.rating_number = int(n) if n is not None else None
        m.features = _str_list(obj.get("features"))
        m.images = _images_2023(obj.get("images"))
        m.bought_together = _id_list(obj.get("bought_together"))
        m.details = _details(obj.get("details"))
    elif schema == "2018":
        m.store = clean_text(obj.get("brand"))
        m.main_category = _main_cat_2018(obj.get("main_cat"))
        m.categories = _category_paths(obj.get("category"))
        m.features = _str_list(obj.get("feature"))
        m.images = _images_2018(obj.get("imageURL"), obj.get("imageURLHighRes"))
        m.also_bought = _id_list(obj.get("also_buy"))
        m.also_viewed = _id_list(obj.get("also_view"))
        m.details = _details(obj.get("details"))
    else:
        m.store = clean_text(obj.get("brand"))
        m.categories = _category_paths(obj.get("categories"))
        m.main_category = m.categories[0][0] if m.categories else ""
        m.images = _images_2023([obj.get("imUrl")] if isinstance(obj.get("imUrl"), str) else [])
        related = obj.get("related") if isinstance(obj.get("related"), dict) else {}
        m.bought_together = _id_list(related.get("bought_together"))
        m.also_bought = _id_list(related.get("also_bought"))
        m.also_viewed = _id_list(related.get("also_viewed"))
        rank = obj.get("salesRank")
        m.sales_rank = dict(rank) if isinstance(rank, dict) else {}
    return m


def read_meta(paths: Union[PathLike, Iterable[PathLike]], issues: Optional[InputIssues] = None, *,
              progress: bool = False) -> Iterator[ItemMeta]:
    """Stream normalised metadata records from one or more files, in file order.

    Duplicate item ids are yielded as they come; callers keep the first.
    """
    if issues is None:
        issues = InputIssues(label="meta records")
    for path in check_inputs(paths, "meta"):
        name = str(path)
        for line, obj in iter_objects(path, issues, progress=progress):
            m = parse_meta(obj, name, line, issues)
            if m is not None:
                yield m
