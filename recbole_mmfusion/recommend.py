"""Top-K recommendations from a trained model file: known users, new users given by a history, and batches.

Every item is scored for a block of users in one call (the model's ``full_sort_predict``, the path the
full-ranking evaluator takes), [PAD] and the excluded items are set to -inf, and ``torch.topk`` picks the K best.
MMFusion builds users from their history, so a new user given as a list of items (and, optionally, review
texts) is scored exactly as a training user with that history would be; it also explains each recommendation
by the attention weights and, per modality, the history item most similar to the recommended one.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_mmfusion.modalities import history_csr

logger = logging.getLogger(__name__)

#: which of a user's items are never recommended: every interaction in the dataset, the training ones, none
EXCLUDE = ("all", "train", "none")


class RecommendError(ValueError):
    """A request that cannot be answered (unknown user, empty history, ...); the message says why."""


@dataclass
class Request:
    """One user to recommend for: a known user (``user``) or a new one (``history``, raw item ids)."""

    label: str
    user: Optional[str] = None
    history: list[str] = field(default_factory=list)
    reviews: list[str] = field(default_factory=list)
    error: Optional[str] = None  # a request that could not be read (reported in its output line)


def _string_list(value, what: str) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return [str(v) for v in value]
    raise ValueError(f"'{what}' must be a list of strings or a comma-separated string")


def read_requests(path) -> Iterator[Request]:
    """Requests from a JSON lines file, streamed. Each line is an object, ``{"user": "<raw user id>"}`` or
    ``{"id": "<label>", "history": ["<item id>", ...], "reviews": ["<review>", ...]}``, or a bare user id.
    Blank lines are skipped; a line that cannot be read becomes a request carrying its error (file and line)."""
    import json

    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                yield Request(label=where, error=f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            if not line:
                continue
            if not line.startswith("{"):
                yield Request(label=line, user=line)
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                user = record.get("user")
                history = _string_list(record.get("history", []), "history")
                reviews = record.get("reviews", [])
                reviews = [reviews] if isinstance(reviews, str) else _string_list(reviews, "reviews")
                if user is None and not history:
                    raise ValueError("needs 'user' (a known user) or 'history' (a new user's items)")
                label = str(record.get("id", user if user is not None else f"line {number}"))
                yield Request(label=label, user=None if user is None else str(user), history=history,
                              reviews=reviews)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                yield Request(label=where, error=f"{where}: {exc}")


def read_titles(data_path: Path, dataset: str, item_tokens: list[str]) -> list[str]:
    """Item titles from ``<dataset>.item`` in internal-id order (``""`` where there is none or no file)."""
    path = Path(data_path) / f"{dataset}.item"
    titles = [""] * len(item_tokens)
    if not path.is_file():
        return titles
    index = {token: i for i, token in enumerate(item_tokens)}
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [name.split(":")[0] for name in next(reader, [])]
        if "item_id" not in header or "title" not in header:
            return titles
        id_col, title_col = header.index("item_id"), header.index("title")
        for row in reader:
            if len(row) > max(id_col, title_col) and row[id_col] in index:
                titles[index[row[id_col]]] = row[title_col]
    return titles


def review_document(reviews: Iterable[str]) -> str:
    """Review lines joined as the converter joins a user's reviews (oldest first, one a line, empty ones out)."""
    from dataset_converters.text import clean, join_reviews

    return join_reviews([clean(r) for r in reviews])[0]


class Recommender:
    """A trained model ready to recommend.

    Args:
        model_file: a file written by training (``saved/<Model>-<time>.pth``).
        exclude (str): ``all`` (every item the user interacted with in the dataset; default), ``train`` (the
            training interactions only: what the full-ranking evaluator masks for validation) or ``none``.
        trust_pickle (bool): also load a pickled RecBole checkpoint (runs code from the file).
        overrides (dict, optional): config keys over the saved ones (``data_path`` when the data moved, ``gpu_id``).
        expect_model (str, optional): fail unless the file holds this model.
    """

    def __init__(self, model_file, exclude: str = "all", trust_pickle: bool = False,
                 overrides: Optional[dict] = None, expect_model: Optional[str] = None):
        from recbole_mmfusion.model_file import load

        if exclude not in EXCLUDE:
            raise RecommendError(f"exclude must be one of {', '.join(EXCLUDE)}, not {exclude!r}")
        self.config, self.model, self.dataset, self.train_dataset = load(
            model_file, trust_pickle=trust_pickle, overrides=overrides, expect_model=expect_model,
            with_loaders=False)
        self.model.eval()
        self.exclude = exclude
        self.model_name = type(self.model).__name__
        uid, iid = self.dataset.uid_field, self.dataset.iid_field
        self.uid_field, self.iid_field = uid, iid
        self.user_tokens = [str(t) for t in self.dataset.field2id_token[uid]]
        self.item_tokens = [str(t) for t in self.dataset.field2id_token[iid]]
        self.user_index = {t: i for i, t in enumerate(self.user_tokens) if i}
        self.item_index = {t: i for i, t in enumerate(self.item_tokens) if i}
        self.n_items = len(self.item_tokens)
        self.titles = read_titles(self.config["data_path"], self.config["dataset"], self.item_tokens)
        self.history_rowptr, self.history_items = history_csr(self.train_dataset)  # what explanations compare with
        self.seen_rowptr, self.seen_items = (
            (self.history_rowptr, self.history_items) if exclude == "train" else history_csr(self.dataset))
        self._tables = None  # per-item explanation tables, built on first use
        self.explains = hasattr(self.model, "item_modality_vectors")
        self.builds_users_from_history = hasattr(self.model, "full_sort_predict_histories")

    # ------------------------------------------------------------------ requests
    def resolve(self, request: Request):
        """``(user id or None, history item ids, unknown raw ids)``; a bad request is a :class:`RecommendError`."""
        if request.error:
            raise RecommendError(request.error)
        if request.user is not None:
            if request.history or request.reviews:
                raise RecommendError(f"{request.label}: a known user is built from the dataset: give a user, or a "
                                     f"history (with reviews), not both")
            user = self.user_index.get(str(request.user))
            if user is None:
                raise RecommendError(
                    f"user {request.user!r} is not in dataset '{self.config['dataset']}' "
                    f"({len(self.user_index)} users); give a new user's items as a history instead")
            return user, [], []
        if not self.builds_users_from_history:
            raise RecommendError(
                f"{self.model_name} represents users by embeddings learnt for the training users, so a new user "
                f"cannot be scored without retraining; MMFusion builds users from their history")
        if request.reviews and not getattr(self.model, "reads_reviews", False):
            raise RecommendError(f"{request.label}: this {self.model_name} does not read user reviews (no text "
                                 f"modality, user_text_source: items, or precomputed features); give the history alone")
        known = [self.item_index[i] for i in request.history if i in self.item_index]
        unknown = [i for i in request.history if i not in self.item_index]
        if unknown:
            logger.warning("%s: %d unknown item ids ignored: %s", request.label, len(unknown), ", ".join(unknown[:10]))
        if not known:
            raise RecommendError(f"{request.label}: the history holds no item of dataset '{self.config['dataset']}'"
                                 + (f" (unknown: {', '.join(unknown[:10])})" if unknown else " (it is empty)"))
        return None, list(dict.fromkeys(known)), unknown

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _scores_known(self, users: list[int]) -> torch.Tensor:
        interaction = Interaction({self.uid_field: torch.tensor(users, dtype=torch.long)})
        return self.model.full_sort_predict(interaction.to(self.model.device)).view(len(users), -1).float()

    @torch.no_grad()
    def _scores_new(self, histories: list[list[int]], documents: list[str]):
        rowptr = torch.zeros(len(histories) + 1, dtype=torch.long)
        rowptr[1:] = torch.tensor([len(h) for h in histories]).cumsum(0)
        items = torch.tensor([i for h in histories for i in h], dtype=torch.long)
        feats = mask = None
        if any(documents):
            feats, mask = self.model.encode_reviews(documents)
        scores, alpha = self.model.full_sort_predict_histories(rowptr, items, feats, mask)
        return scores.float(), alpha

    def _mask(self, scores: torch.Tensor, users: list[Optional[int]], histories: list[list[int]]) -> None:
        scores[:, 0] = float("-inf")
        if self.exclude == "none":
            return
        rows, cols = [], []
        for row, (user, history) in enumerate(zip(users, histories)):
            seen = (self.seen_items[self.seen_rowptr[user]:self.seen_rowptr[user + 1]].tolist()
                    if user is not None else history)
            rows += [row] * len(seen)
            cols += seen
        if rows:
            scores[torch.tensor(rows), torch.tensor(cols)] = float("-inf")

    def recommend_block(self, requests: list[Request], k: int, explain: bool = True) -> list[dict]:
        """Top-``k`` results for a block of requests, scored together; a bad request gets an ``error`` entry."""
        if k < 1:
            raise RecommendError(f"k must be at least 1, not {k}")
        resolved, results = [], [None] * len(requests)
        for pos, request in enumerate(requests):
            try:
                resolved.append((pos, *self.resolve(request)))
            except RecommendError as exc:
                results[pos] = {"user": request.label, "error": str(exc)}
        known = [r for r in resolved if r[1] is not None]
        new = [r for r in resolved if r[1] is None]
        for group in (known, new):
            if not group:
                continue
            users = [r[1] for r in group]
            histories = [r[2] for r in group]
            if group is known:
                scores = self._scores_known(users)
                alpha = self.model.user_attention(torch.tensor(users)) if explain and self.explains else None
            else:
                scores, alpha = self._scores_new(histories, [review_document(requests[r[0]].reviews) for r in group])
            scores = scores.cpu()
            self._mask(scores, users, histories)
            top_scores, top_items = torch.topk(scores, min(k, self.n_items), dim=1)
            attention = None
            if explain and self.explains:
                attention = [{m: round(float(a), 4) for m, a in zip(self.model.modalities, row)} for row in alpha.cpu()]
            for row, (pos, user, history, unknown) in enumerate(group):
                keep = torch.isfinite(top_scores[row])
                items = top_items[row][keep].tolist()
                result = {
                    "user": requests[pos].label, "new_user": user is None, "model": self.model_name,
                    "excluded": self.exclude,
                    "items": [{"rank": rank + 1, "item_id": self.item_tokens[i], "title": self.titles[i],
                               "score": float(s)} for rank, (i, s) in enumerate(zip(items, top_scores[row][keep]))],
                }
                if user is None:
                    result["history"] = [self.item_tokens[i] for i in history]
                    result["unknown_items"] = unknown
                if attention is not None:
                    result["user_attention"] = attention[row]
                    own = history if user is None else self._train_history(user)
                    self._explain_items(result["items"], items, own)
                results[pos] = result
        return results

    def _train_history(self, user: int) -> list[int]:
        return self.history_items[self.history_rowptr[user]:self.history_rowptr[user + 1]].tolist()

    # ------------------------------------------------------------------ explanations (MMFusion)
    @torch.no_grad()
    def _item_tables(self):
        """Every item's per-modality projection (centred on the mean over the items that have the modality, then
        unit length), its modality masks and its attention, computed once. The projections share a bias and a
        common direction, so uncentred cosines would all be near 1."""
        if self._tables is None:
            chunks = [self.model.item_modality_vectors(c) for c in torch.arange(self.n_items).split(16384)]
            vectors = {m: torch.cat([c[0][m] for c in chunks]).cpu() for m in self.model.modalities}
            masks = {m: torch.cat([c[1][m] for c in chunks]).cpu() for m in self.model.modalities}
            alpha = torch.cat([c[2] for c in chunks]).cpu()
            units = {}
            for m, v in vectors.items():
                centre = v[masks[m]].mean(dim=0) if masks[m].any() else torch.zeros(v.shape[1])
                units[m] = F.normalize(v - centre, dim=1)
            self._tables = units, masks, alpha
        return self._tables

    @torch.no_grad()
    def _explain_items(self, entries: list[dict], items: list[int], history: list[int]) -> None:
        """Add each item's attention and, per modality, the history item closest to it (cosine similarity of
        the centred projections, the vectors the attention weighs)."""
        if not items or not history:  # a user without training interactions has nothing to be compared with
            return
        units, masks, alpha = self._item_tables()
        rec, hist = torch.tensor(items), torch.tensor(history, dtype=torch.long)
        closest = {}
        for m, unit in units.items():
            valid = masks[m][hist].unsqueeze(0) & masks[m][rec].unsqueeze(1)
            closest[m] = (unit[rec] @ unit[hist].T).masked_fill(~valid, float("-inf")).max(dim=1)
        for row, entry in enumerate(entries):
            weights = {m: round(float(a), 4) for m, a in zip(self.model.modalities, alpha[items[row]])}
            because = {}
            for m in units:
                value, index = closest[m].values[row], closest[m].indices[row]
                if torch.isfinite(value):
                    h = history[int(index)]
                    because[m] = {"item_id": self.item_tokens[h], "title": self.titles[h],
                                  "similarity": round(float(value), 4)}
            entry["attention"] = weights
            entry["because"] = because
            if because:
                top = max(because, key=lambda m: weights[m])
                liked = because[top]
                entry["reason"] = (f"because you liked {liked['title'] or liked['item_id']} "
                                   f"({top}, similarity {liked['similarity']:.2f})")

    # ------------------------------------------------------------------ streams
    def block_size(self) -> int:
        """Users scored at once: a block's score matrix stays near 32 MiB, whatever the catalogue size."""
        return max(1, min(4096, (1 << 23) // max(self.n_items, 1)))

    def stream(self, requests: Iterable[Request], k: int, explain: bool = True,
               block_size: Optional[int] = None) -> Iterator[dict]:
        """Results in the order of ``requests``, scored ``block_size`` users at a time."""
        size = block_size or self.block_size()
        block: list[Request] = []
        for request in requests:
            block.append(request)
            if len(block) == size:
                yield from self.recommend_block(block, k, explain)
                block = []
        if block:
            yield from self.recommend_block(block, k, explain)
