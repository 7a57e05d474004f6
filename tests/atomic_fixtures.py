"""Small RecBole atomic datasets written by tests (not the converter), for RecBole-level checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_atomic_dataset(root: Path, name: str = "tiny", n_users: int = 30, n_items: int = 40,
                         per_user: int = 8, seed: int = 0, with_item_file: bool = True) -> Path:
    """Write ``root/name/name.{train,valid,test}.inter`` (+ ``.inter`` and ``.item``) and return ``root``.

    Each user gets ``per_user`` distinct items at increasing timestamps; the last goes to test, the one before
    to valid. The ``.item`` file has a token_seq column with empty cells, a float column with missing cells and
    a token column with missing cells, which is what RecBole on pandas 3 trips over.
    """
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    rows = {"train": [], "valid": [], "test": []}
    for user in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        for position, item in enumerate(items):
            part = "test" if position == per_user - 1 else "valid" if position == per_user - 2 else "train"
            rows[part].append(f"u{user}\ti{item}\t{1 + (user + item) % 5}\t{1000 + user * 100 + position}\n")
    for part, lines in rows.items():
        (folder / f"{name}.{part}.inter").write_text(header + "".join(lines), encoding="utf-8")
    (folder / f"{name}.inter").write_text(header + "".join(rows["train"] + rows["valid"] + rows["test"]),
                                         encoding="utf-8")
    if with_item_file:
        lines = ["item_id:token\ttitle:token_seq\tstore:token\tprice:float\n"]
        for item in range(n_items):
            title = "" if item % 7 == 0 else " ".join(f"w{(item * k) % 11}" for k in range(1, 2 + item % 4))
            store = "" if item % 5 == 0 else f"s{item % 3}"
            price = "" if item % 4 == 0 else f"{item + 0.5}"
            lines.append(f"i{item}\t{title}\t{store}\t{price}\n")
        (folder / f"{name}.item").write_text("".join(lines), encoding="utf-8")
    return root


def tiny_config_dict(root: Path, **extra) -> dict:
    """Config overrides that point RecBole at a dataset written by :func:`write_atomic_dataset`."""
    config = {
        "data_path": str(root),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title", "store", "price"]},
        "epochs": 1,
        "train_batch_size": 64,
        "show_progress": False,
        "use_gpu": False,
        "checkpoint_dir": str(root / "saved"),
        "results_dir": str(root / "results"),
        "state": "WARNING",
    }
    config.update(extra)
    return config
