"""Full-ranking batch sizing.

RecBole's full-ranking loader puts ``max(eval_batch_size // n_items, 1)`` users in a batch, so with the default
``eval_batch_size: 4096`` a catalogue of 100k items is evaluated one user at a time. Here the number of users per
batch comes from the item count and a memory budget instead, and is written back as ``eval_batch_size`` (which
RecBole's loader then divides by the item count again).
"""

from __future__ import annotations

import logging

from recbole_mmfusion.config import ConfigError

logger = logging.getLogger(__name__)

#: float32 [users, items] tensors alive at once during a full-ranking batch: the scores, the history-masked
#: copy RecBole writes into, and top-k / positive-mask work space
SCORE_COPIES = 3
BYTES_PER_SCORE = 4


def users_per_batch(n_items: int, n_users: int, memory_mb: float, fixed: int | None = None) -> int:
    """Users per full-ranking batch: ``fixed`` if given, else as many as fit in ``memory_mb``, in [1, n_users]."""
    if fixed is not None:
        wanted = int(fixed)
        if wanted < 1:
            raise ConfigError(f"eval_users_per_batch must be >= 1, got {fixed}")
    else:
        per_user = max(n_items, 1) * BYTES_PER_SCORE * SCORE_COPIES
        wanted = int(memory_mb * 2**20 // per_user)
    return max(1, min(wanted, max(n_users, 1)))


def _eval_modes(config) -> list[str]:
    mode = (config["eval_args"] or {}).get("mode", "full")
    return [str(m) for m in (mode.values() if isinstance(mode, dict) else [mode])]


def size_full_sort_batches(config, dataset) -> int | None:
    """Set ``config['eval_batch_size']`` so each full-ranking batch holds a budgeted number of users.

    ``eval_batch_size`` is shared by the validation and test loaders, so it is only rewritten when both rank all
    items; with sampled evaluation in either phase it is left as configured (and a mixed setup is logged).

    Returns:
        int or None: users per batch, or ``None`` when evaluation is not full ranking in every phase.
    """
    modes = _eval_modes(config)
    if not all(mode == "full" for mode in modes):
        if "full" in modes:
            logger.warning("Full ranking and sampled evaluation are mixed (%s): eval_batch_size=%s is used as "
                           "configured for both", modes, config["eval_batch_size"])
        return None
    n_items, n_users = dataset.item_num, dataset.user_num
    users = users_per_batch(n_items, n_users, config["eval_memory_mb"] or 512, config["eval_users_per_batch"])
    config["eval_batch_size"] = users * n_items
    logger.info(
        "Full-ranking evaluation: %d items, %d users per batch (%.1f MB of scores per batch; "
        "eval_memory_mb=%s, eval_users_per_batch=%s)",
        n_items, users, users * n_items * BYTES_PER_SCORE * SCORE_COPIES / 2**20,
        config["eval_memory_mb"], config["eval_users_per_batch"],
    )
    return users


#: ``test_history_mask`` values: the items excluded from a test user's ranking besides ``[PAD]``
TEST_HISTORY_MASKS = ("train_valid", "train")


def apply_test_history_mask(config, test_data, train_dataset) -> str:
    """Make the test ranking exclude only training items when ``test_history_mask: train``.

    RecBole removes a test user's training *and* validation items from the ranking (``train_valid``, the
    default). MMRec, whose protocol most published multimodal tables follow, removes only the training items,
    so a validation item left in the ranking takes a top-k place and counts as a miss. The validation ranking
    is the same under both (it only ever excludes training items).

    Returns:
        str: the mask in force.
    """
    mode = config["test_history_mask"] or "train_valid"
    if mode not in TEST_HISTORY_MASKS:
        raise ConfigError(f"test_history_mask must be one of {', '.join(TEST_HISTORY_MASKS)}, not {mode!r}")
    if mode == "train_valid" or getattr(test_data, "uid2history_item", None) is None:
        return mode
    from recbole_mmfusion.modalities import history_csr

    rowptr, items = history_csr(train_dataset)
    history = test_data.uid2history_item
    for uid in range(len(history)):
        if history[uid] is not None:
            history[uid] = items[rowptr[uid]:rowptr[uid + 1]]
    logger.info("Test ranking excludes training items only (test_history_mask: train)")
    return mode
