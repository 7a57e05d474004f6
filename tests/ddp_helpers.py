"""Rank functions for tests that spawn DDP ranks (importable by name, as ``torch.multiprocessing.spawn`` needs)."""

from __future__ import annotations

import gc
import json
from pathlib import Path


def best_model_rank(local_rank: int, root: str, port: int, out: str, original: bool) -> None:
    """Train BPR one epoch on two ranks, zero the weights, test the best model; write what each rank saw.

    Rank 1's checkpoint name gets another suffix, as when the ranks build their trainers in different seconds
    (RecBole names the file after the clock) or on different machines.
    """
    import torch

    import recbole_mmfusion  # noqa: F401  (patches)
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import BPR
    from recbole.trainer import Trainer

    from recbole_mmfusion import compat
    from recbole_mmfusion.config import MMConfig

    from atomic_fixtures import tiny_config_dict

    if original:
        Trainer.evaluate = compat.ORIGINALS["g3"]
    config = MMConfig(model="BPR", dataset="tiny", config_dict=tiny_config_dict(
        Path(root), nproc=2, world_size=2, offset=0, ip="localhost", port=port, local_rank=local_rank))
    data = create_dataset(config)
    train, valid, test = data_preparation(config, data)
    trainer = Trainer(config, BPR(config, train._dataset))
    trainer.fit(train, valid, saved=True)
    after_fit = trainer.evaluate(test, load_best_model=False)
    if local_rank:
        trainer.saved_model_file += ".rank1"
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.zero_()
    tested = trainer.evaluate(test, load_best_model=True)
    weights = float(sum(p.double().abs().sum() for p in trainer.model.parameters()))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{local_rank}.json").write_text(json.dumps(
        {"after_fit": dict(after_fit), "tested": dict(tested), "weights": weights}))
    del trainer  # DDP's reducer holds the process group: release it first
    gc.collect()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


class TestedWeights:
    """``on_tested`` for DDP runs: each rank saves the weights it tested to ``<folder>/rank-<local_rank>.pt``.

    A module-level class, so it pickles into the spawned ranks.
    """

    def __init__(self, folder):
        self.folder = str(folder)

    def __call__(self, trainer, config, **_):
        import torch

        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: value.detach().cpu() for name, value in trainer.model.state_dict().items()}
        torch.save(state, folder / f"rank-{config['local_rank']}.pt")
        return {}
