"""Per-user full-ranking metrics: the same ranking as RecBole's evaluator, kept user by user.

RecBole's evaluator averages each metric over users and throws the per-user values away; a paired significance
test and a breakdown by user activity need them. :func:`rank_test_users` scores every item for every test user
with the trainer's own full-ranking step (so the history mask, the ``[PAD]`` column and the model's
``full_sort_predict`` are exactly those of the evaluation) and keeps, per user and per *view*, which of the top-k
positions are relevant and how many relevant items the user has. :func:`per_user_metrics` turns those into
per-user values with RecBole's metric classes, so every number here averages to RecBole's own.

Views:

- ``all``: every test item of the user is relevant, every item is a candidate (RecBole's protocol);
- ``warm``: only the user's test items that are warm (seen in training) are relevant, every item is still a
  candidate; users without a warm test item are left out (cold-item datasets only);
- ``cold``: only the user's test items that are cold (never in training) are relevant, every item is still a
  candidate; users without a cold test item are left out;
- ``cold_only``: as ``cold``, but only cold items are candidates (warm items cannot take the top-k places).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from recbole.evaluator.register import metrics_dict

VIEWS = ("all", "warm", "cold", "cold_only")
#: RecBole's top-k metrics that have a value per user (coverage-style metrics describe the whole list set)
PER_USER_METRICS = ("recall", "ndcg", "mrr", "hit", "precision", "map")
#: training interactions per user: (label, lowest, highest), highest None = no bound; "0": users whose every
#: training interaction went to a held-out item (cold-item datasets)
ACTIVITY_BUCKETS = (("0", 0, 0), ("1-5", 1, 5), ("6-20", 6, 20), (">20", 21, None))


@dataclass
class RankedView:
    """Top-k relevance of each evaluated user in one view.

    Shapes:
        - ``users``: :math:`(U)` internal user ids
        - ``pos_index``: :math:`(U, K)` bool, position ``k`` of the ranking holds a relevant item
        - ``pos_len``: :math:`(U)` number of relevant items of the user
    """

    users: np.ndarray
    pos_index: np.ndarray
    pos_len: np.ndarray


@torch.no_grad()
def rank_test_users(trainer, eval_data, max_k: int, cold_items: np.ndarray | None = None) -> dict[str, RankedView]:
    """Rank all items for every user of ``eval_data`` (a full-sort loader) and keep the top ``max_k``.

    Args:
        trainer: a RecBole trainer holding the model to evaluate (its ``_full_sort_batch_eval`` makes the scores).
        eval_data: the full-ranking data loader (validation or test).
        max_k (int): the largest cut-off.
        cold_items (np.ndarray, optional): internal ids of the cold items; without it only ``all`` is computed.

    Returns:
        dict: view name -> :class:`RankedView`.
    """
    model = trainer.model
    was_training = model.training
    model.eval()
    n_items = eval_data._dataset.item_num
    trainer.tot_item_num = n_items
    device = trainer.device
    cold = None
    if cold_items is not None:
        cold = torch.zeros(n_items, dtype=torch.bool, device=device)
        cold[torch.as_tensor(cold_items, dtype=torch.long, device=device)] = True
    views = ["all"] + (["warm", "cold", "cold_only"] if cold is not None else [])
    parts = {view: ([], [], []) for view in views}
    for batch in eval_data:
        interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batch)
        users = interaction[eval_data.uid_field].cpu().numpy()
        relevant = torch.zeros_like(scores, dtype=torch.bool)
        relevant[positive_u.to(device), positive_i.to(device)] = True
        for view in views:
            view_scores, view_relevant = scores, relevant
            if view == "warm":
                view_relevant = relevant & ~cold
            elif view != "all":
                view_relevant = relevant & cold
                if view == "cold_only":
                    view_scores = scores.masked_fill(~cold, -np.inf)
            _, top = torch.topk(view_scores, max_k, dim=-1)
            pos_len = view_relevant.sum(dim=1)
            keep = (pos_len > 0).cpu().numpy()
            parts[view][0].append(users[keep])
            parts[view][1].append(torch.gather(view_relevant, 1, top).cpu().numpy()[keep])
            parts[view][2].append(pos_len.cpu().numpy()[keep])
    model.train(was_training)
    out = {}
    for view, (users, pos_index, pos_len) in parts.items():
        out[view] = RankedView(np.concatenate(users) if users else np.zeros(0, np.int64),
                               np.concatenate(pos_index) if pos_index else np.zeros((0, max_k), bool),
                               np.concatenate(pos_len) if pos_len else np.zeros(0, np.int64))
    return out


def per_user_metrics(view: RankedView, metric_names, topk) -> dict[str, np.ndarray]:
    """Per-user values of each top-k metric at each cut-off, computed by RecBole's metric classes.

    Returns:
        dict: ``"ndcg@20"`` -> float64 array :math:`(U)`, for every metric in ``metric_names`` and k in ``topk``.
    """
    settings = {"topk": list(topk), "metric_decimal_place": 4}
    pos_index = view.pos_index.astype(int)
    pos_len = view.pos_len.astype(int)
    out = {}
    for name in metric_names:
        if name.lower() not in PER_USER_METRICS:
            continue
        metric = metrics_dict[name.lower()](settings)
        wants_len = len(inspect.signature(metric.metric_info).parameters) == 2
        values = metric.metric_info(pos_index, pos_len) if wants_len else metric.metric_info(pos_index)
        for k in topk:
            out[f"{name.lower()}@{k}"] = np.asarray(values[:, k - 1], dtype=np.float64)
    return out


def activity_buckets(train_counts: np.ndarray, users: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks over ``users``: which activity bucket (training interactions) each user falls in."""
    counts = train_counts[users]
    return {label: (counts >= low) & (counts <= (high if high is not None else np.inf))
            for label, low, high in ACTIVITY_BUCKETS}


def training_counts(train_dataset) -> np.ndarray:
    """Training interactions of each internal user id (index = user id)."""
    users = np.asarray(train_dataset.inter_feat[train_dataset.uid_field], dtype=np.int64)
    return np.bincount(users, minlength=train_dataset.user_num)
