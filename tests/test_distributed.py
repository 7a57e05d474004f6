"""Multi-process (DDP) training: launch settings, backend and device choice, port and folders before spawning,
errors raised again in the parent; and BPR and MMFusion trained with ``--nproc=2`` on the CPU against one process."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from recbole.utils import get_trainer

from recbole_mmfusion import distributed
from recbole_mmfusion.cli import main
from recbole_mmfusion.compat import ddp_backend_and_device
from recbole_mmfusion.config import ConfigError
from recbole_mmfusion.distributed import Launch, launch_settings, threads_per_rank
from recbole_mmfusion.quick_start import build, run

import ddp_helpers
from atomic_fixtures import tiny_config_dict


# ---------------------------------------------------------------------------------------------- backend and device
@pytest.mark.parametrize("visible, gpu_id, nproc, local_rank, use_gpu, expected", [
    (0, "0", 2, 1, True, ("gloo", "cpu")),          # no CUDA
    (0, "", 1, 0, True, ("gloo", "cpu")),
    (2, "0,1", 2, 1, True, ("nccl", "cuda:1")),     # one named, visible GPU per rank
    (4, "0,1,2,3", 2, 0, True, ("nccl", "cuda:0")),  # more than enough
    (2, "0", 2, 0, True, ("gloo", "cpu")),          # gpu_id names one GPU for two ranks
    (1, "0,1", 2, 0, True, ("gloo", "cpu")),        # names two, one is visible
    (2, "", 2, 0, True, ("gloo", "cpu")),           # names none
    (2, "0,1", 2, 1, False, ("gloo", "cpu")),       # use_gpu: False
])
def test_backend_and_device(visible, gpu_id, nproc, local_rank, use_gpu, expected):
    assert ddp_backend_and_device(visible, gpu_id, nproc, local_rank, use_gpu) == expected


def test_backend_and_device_rejects_a_rank_outside_the_machine():
    with pytest.raises(ValueError, match="local_rank"):
        ddp_backend_and_device(2, "0,1", 2, 2)


# ---------------------------------------------------------------------------------------------- launch settings
def _keys(**values):
    """A config as launch_settings reads it: RecBole's Config gives None for a key nobody set."""
    return {key: values.get(key) for key in ("nproc", "world_size", "offset", "ip", "port")}


@pytest.mark.parametrize("values, expected", [
    ({}, None),
    ({"nproc": 1}, None),
    ({"nproc": 1, "world_size": -1}, None),
    ({"nproc": "2"}, Launch(nproc=2, world_size=2)),  # strings, as from a YAML or the command line
    ({"nproc": 2, "world_size": "-1"}, Launch(nproc=2, world_size=2)),
    ({"nproc": 4, "port": "29500"}, Launch(nproc=4, world_size=4, port=29500)),
    ({"nproc": 2, "world_size": 4, "offset": 2, "ip": "10.0.0.1", "port": 29500},
     Launch(nproc=2, world_size=4, offset=2, ip="10.0.0.1", port=29500)),
    ({"nproc": 1, "world_size": 2, "ip": "10.0.0.1", "port": 29500},
     Launch(nproc=1, world_size=2, ip="10.0.0.1", port=29500)),
])
def test_launch_settings(values, expected):
    assert launch_settings(_keys(**values)) == expected


@pytest.mark.parametrize("values, message", [
    ({"nproc": 0}, "nproc must be >= 1"),
    ({"nproc": "two"}, "nproc must be an integer"),
    ({"nproc": 2.5}, "nproc must be an integer"),
    ({"nproc": 2, "world_size": 1}, "world_size"),
    ({"nproc": 2, "world_size": 4}, "needs ip and port"),
    ({"nproc": 2, "world_size": 4, "ip": "10.0.0.1", "port": 1, "offset": 3}, "offset"),
    ({"nproc": 2, "offset": 1}, r"offset .* \[0, 0\]"),
    ({"nproc": 2, "port": 70000}, "port must be in"),
])
def test_launch_settings_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        launch_settings(_keys(**values))


def test_plan_reads_the_resolved_config_and_not_inside_a_rank(tmp_path):
    overrides = tiny_config_dict(tmp_path)
    assert distributed.plan("BPR", "tiny", config_dict=overrides) is None
    launch_plan = distributed.plan("BPR", "tiny", config_dict={**overrides, "nproc": "2"})
    assert launch_plan.launch == Launch(nproc=2, world_size=2)
    assert distributed.plan("BPR", "tiny", config_dict={**overrides, "nproc": "2", "local_rank": 1}) is None


def test_threads_per_rank():
    assert threads_per_rank(2, 2, {}) == 1
    assert threads_per_rank(16, 3, {}) == 5
    assert threads_per_rank(1, 4, {}) == 1
    assert threads_per_rank(16, 2, {"OMP_NUM_THREADS": "4"}) is None


def test_free_port_can_be_bound():
    import socket

    port = distributed.free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", port))


# ---------------------------------------------------------------------------------------------- before spawning
@pytest.fixture
def tiny_plan(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return distributed.plan("BPR", "tiny", config_dict={**tiny_config_dict(tmp_path / "data"), "nproc": 2})


def test_folders_and_port_exist_before_the_ranks_start(tiny_plan, tmp_path, monkeypatch):
    assert tiny_plan.launch.port is None
    expected = {Path("log") / "BPR", Path("log_tensorboard"), tmp_path / "data" / "saved",
                tmp_path / "data" / "results" / "tiny"}
    assert set(tiny_plan.folders) == expected
    seen = {}

    def spawn(fn, args, nprocs, join):
        (job,) = args
        seen.update(nprocs=nprocs, port=job.plan.launch.port, scratch=job.scratch,
                    folders={folder: folder.is_dir() for folder in tiny_plan.folders})
        (job.scratch / "record.pkl").write_bytes(pickle.dumps({"model": "BPR", "world_size": 2}))

    monkeypatch.setattr(mp, "spawn", spawn)
    assert distributed.run(tiny_plan) == {"model": "BPR", "world_size": 2}
    assert seen["nprocs"] == 2 and isinstance(seen["port"], int)
    assert all(seen["folders"].values())
    assert not seen["scratch"].exists()  # the hand-over folder is removed


def test_a_rank_error_is_raised_again_in_the_parent(tiny_plan, monkeypatch):
    def spawn(fn, args, nprocs, join):
        (job,) = args
        (job.scratch / "error-1.pkl").write_bytes(pickle.dumps(ConfigError("bad key in rank 1")))
        raise mp.ProcessRaisedException("Traceback ...", 1, 4321)

    monkeypatch.setattr(mp, "spawn", spawn)
    with pytest.raises(ConfigError, match="bad key in rank 1"):
        distributed.run(tiny_plan)


def test_on_tested_must_reach_the_ranks(tiny_plan):
    with pytest.raises(TypeError, match="on_tested must pickle"):
        distributed.run(tiny_plan, on_tested=lambda **_: {})


# ---------------------------------------------------------------------------------------------- two ranks, for real
#: a demo big enough for trained metrics to sit far above a random ranking (200 items: recall@20 ~0.1 at random)
DEMO = {"demo_users": 600, "demo_items": 200, "demo_image_size": 16, "image_size": 32}
#: MMFusion's encoders at test size (as in test_mmfusion.py)
MM_TINY = {
    "text_vocab_size": 300, "text_dim": 32, "text_layers": 1, "text_heads": 2, "text_hidden_dim": 64,
    "text_max_length": 48, "image_backbone": "resnet18", "image_input_size": 32,
    "graph_dim": 16, "graph_fanouts": [4, 4], "user_history_sample": 8,
    "fusion_dim": 16, "attention_dim": 8, "fm_factors": 8,
    "text_pretrain_epochs": 1, "image_pretrain_epochs": 1, "pretrain_batch_size": 16, "encode_batch_size": 32,
}
#: no early stop, so both runs train the same number of epochs
TRAINING = {
    "BPR": {"epochs": 20, "learning_rate": 0.01},
    "MMFusion": {**MM_TINY, "epochs": 10, "train_batch_size": 1024, "learning_rate": 0.003},
}
#: largest |2 ranks - 1 process| allowed on test recall@20 and NDCG@20 (why: above the two-rank tests)
TOLERANCE = {"BPR": 0.03, "MMFusion": 0.08}
#: test recall@20 at least this many times a random ranking's. MMFusion's features come from encoders pretrained
#: afresh in each test session, and not deterministically across processes, so its recall@20 ranges over
#: 0.29-0.39 from one session to the next (0.10 at random)
ABOVE_RANDOM = {"BPR": 3, "MMFusion": 2}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A generated amazon-demo with images, and MMFusion's feature cache, built once (ranks only read them)."""
    folder = tmp_path_factory.mktemp("ddp")
    build("MMFusion", "amazon-demo", config_dict=_overrides(folder, "MMFusion"))
    return folder


def _overrides(folder: Path, model: str, **extra) -> dict:
    return {**DEMO, **TRAINING[model], "stopping_step": 100, "show_progress": False, "use_gpu": False,
            "state": "WARNING", "data_path": str(folder / "dataset"), "checkpoint_dir": str(folder / "saved"),
            "results_dir": str(folder / "results"), **extra}


def _cli(model: str, overrides: dict, capsys) -> dict:
    args = [f"--model={model}", "--dataset=amazon-demo"]
    args += [f"--{key}={json.dumps(value) if isinstance(value, list) else value}" for key, value in overrides.items()]
    assert main(args) == 0
    out = capsys.readouterr().out
    return json.loads(Path(re.search(r"results: (\S+)", out).group(1)).read_text())


def _close_to_one_process(model: str, ranks: dict, single: dict) -> None:
    """The two ranks' test metrics are those of one process within TOLERANCE, and far above random."""
    assert (ranks["nproc"], ranks["world_size"], ranks["ddp_backend"], ranks["device"]) == (2, 2, "gloo", "cpu")
    assert "nproc" not in single
    assert ranks["epochs_trained"] == single["epochs_trained"] == TRAINING[model]["epochs"]
    for name in ("recall@20", "ndcg@20"):
        assert abs(ranks["test_result"][name] - single["test_result"][name]) <= TOLERANCE[model], name
    assert ranks["test_result"]["recall@20"] > ABOVE_RANDOM[model] * 20 / ranks["n_items"]  # 20 / n_items: random


def _gathered_as_in_one_process(model: str, overrides: dict, ranks: dict, **load) -> None:
    """The same weights tested in one process give the metrics the two ranks gathered (RecBole's _map_reduce),
    up to the one test user the sampler repeats so both ranks get equal shares (1 / n_users)."""
    config, net, _, _, _, test_data = build(model, "amazon-demo", config_dict=overrides)
    if "state_dict" in load:
        net.load_state_dict(load["state_dict"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    again = trainer.evaluate(test_data, load_best_model="model_file" in load, model_file=load.get("model_file"))
    for name, value in again.items():
        assert abs(value - ranks["test_result"][name]) <= 1 / ranks["n_users"] + 1e-4, name


# Not the same numbers as one process: with two ranks each rank takes half of every batch (DDP averages the two
# halves' gradients, so the optimiser steps and the batch size are those of one process), but which interactions
# share a batch, and the negatives drawn for them (each rank seeds its sampler with seed + rank), differ: the two
# runs are two draws of the same training. BPR (20 epochs at lr 0.01, converged: recall@20 about 0.50) moves by
# at most 0.007 across seeds and 2 ranks stayed within 0.01 of 1 process; its tolerance, 0.03, is a third of what
# a broken split costs (half the optimiser steps leave it at recall@20 0.39-0.40). MMFusion (10 epochs, 599 test
# users) moves by up to 0.04 across seeds, and its features, pretrained afresh each session, add to that: 2 ranks
# came within 0.004-0.021 of 1 process in five seeds, and 0.044 once, hence 0.08. Two ranks that stopped
# averaging their gradients would reach about the same metrics, though: the BPR test checks instead that both
# ranks end with identical weights, and both tests that the gathered metrics are those of the same weights
# tested in one process.
@pytest.mark.slow
def test_bpr_two_ranks_stay_in_step_and_match_one_process(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RecBole's ./log and ./log_tensorboard
    overrides = _overrides(demo, "BPR", results_dir=str(tmp_path / "results"), checkpoint_dir=str(tmp_path / "saved"))
    single = run("BPR", "amazon-demo", config_dict=overrides, saved=False)
    # --no-save: each rank tests its own last-epoch weights, nothing reloads them from rank 0
    ranks = run("BPR", "amazon-demo", config_dict={**overrides, "nproc": "2"}, saved=False,
                on_tested=ddp_helpers.TestedWeights(tmp_path / "tested"))
    _close_to_one_process("BPR", ranks, single)
    # both ranks ran (a log file each, besides the single run's); only rank 0 wrote a record
    assert len(list(Path("log", "BPR").glob("*.log"))) == 3
    assert len(list((tmp_path / "results" / "amazon-demo").glob("*.json"))) == 2
    weights = [torch.load(tmp_path / "tested" / f"rank-{rank}.pt") for rank in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    _gathered_as_in_one_process("BPR", overrides, ranks, state_dict=weights[0])


@pytest.mark.slow
def test_mmfusion_with_nproc_2_on_the_command_line(demo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    overrides = _overrides(demo, "MMFusion", results_dir=str(tmp_path / "results"),
                           checkpoint_dir=str(tmp_path / "saved"))
    single = run("MMFusion", "amazon-demo", config_dict=overrides)
    ranks = _cli("MMFusion", {**overrides, "nproc": 2}, capsys)
    _close_to_one_process("MMFusion", ranks, single)
    assert len(list(Path("log", "MMFusion").glob("*.log"))) == 3
    # the best checkpoint, written by rank 0 only, is what both ranks tested
    assert len(list((tmp_path / "saved").iterdir())) == 2 and Path(ranks["checkpoint"]).is_file()
    _gathered_as_in_one_process("MMFusion", overrides, ranks, model_file=ranks["checkpoint"])


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_bpr_two_ranks_on_two_gpus_use_nccl(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = _overrides(demo, "BPR", results_dir=str(tmp_path / "results"), checkpoint_dir=str(tmp_path / "saved"),
                           use_gpu=True, gpu_id="0,1")
    single = run("BPR", "amazon-demo", config_dict=overrides)
    ranks = run("BPR", "amazon-demo", config_dict={**overrides, "nproc": 2})
    assert (ranks["world_size"], ranks["ddp_backend"], ranks["device"]) == (2, "nccl", "cuda:0")
    for name in ("recall@20", "ndcg@20"):
        assert abs(ranks["test_result"][name] - single["test_result"][name]) <= TOLERANCE["BPR"], name


@pytest.mark.slow
def test_an_error_in_a_rank_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["--model=BPR", "--dataset=nowhere", "--nproc=2", f"--data_path={tmp_path}", "--use_gpu=False",
                 f"--checkpoint_dir={tmp_path / 'saved'}", f"--results_dir={tmp_path / 'results'}"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    # torch's spawn may log that it stopped the other rank; no traceback reaches the user
    assert err.splitlines()[-1].startswith("error: dataset 'nowhere' not found") and "Traceback" not in err
