"""MMFusion end to end on a tiny generated demo dataset: the three feature modes through the command line,
full ranking against pairwise scores and the FM formula, save and reload, masks, gradients, and no leakage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from recbole.data.interaction import Interaction

from recbole_mmfusion.cli import main
from recbole_mmfusion.config import properties_dir
from recbole_mmfusion.quick_start import build, load_data_and_model, make_trainer

#: small enough that pretraining, encoding and one BPR epoch take seconds on a CPU
TINY = {
    "demo_users": 120, "demo_items": 60, "demo_image_size": 16, "image_size": 32,
    "text_vocab_size": 300, "text_dim": 32, "text_layers": 1, "text_heads": 2, "text_hidden_dim": 64,
    "text_max_length": 48, "image_backbone": "resnet18", "image_input_size": 32,
    "graph_dim": 16, "graph_fanouts": [4, 4], "user_history_sample": 8,
    "fusion_dim": 16, "attention_dim": 8, "fm_factors": 8,
    "text_pretrain_epochs": 1, "image_pretrain_epochs": 1, "pretrain_batch_size": 16, "encode_batch_size": 32,
    "epochs": 1, "train_batch_size": 256, "show_progress": False, "use_gpu": False, "state": "WARNING",
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A data folder holding a tiny amazon-demo (generated, converted, with images) and its feature cache."""
    folder = tmp_path_factory.mktemp("mm")
    config, *_ = build("MMFusion", "amazon-demo", config_dict=_overrides(folder))
    return folder


def _overrides(folder: Path, **extra) -> dict:
    return {**TINY, "data_path": str(folder / "dataset"), "checkpoint_dir": str(folder / "saved"),
            "results_dir": str(folder / "results"), **extra}


def _argv(folder: Path, **extra) -> list[str]:
    args = ["--model=MMFusion", "--dataset=amazon-demo"]
    for key, value in _overrides(folder, **extra).items():
        args.append(f"--{key}={json.dumps(value) if isinstance(value, list) else value}")
    return args


def _write_precomputed(folder: Path, dataset, dims=(12, 20), drop=()):
    """Random item features for every item except ``drop`` (raw ids), rows in reverse id order."""
    ids = [token for token in dataset.field2id_token["item_id"][1:] if token not in set(drop)][::-1]
    rng = np.random.default_rng(0)
    paths = {}
    for name, dim in zip(("text", "image"), dims):
        paths[name] = folder / f"{name}_feat.npy"
        np.save(paths[name], rng.normal(size=(len(ids), dim)).astype(np.float32))
    ids_file = folder / "item_ids.txt"
    ids_file.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return {"precomputed_text_file": str(paths["text"]), "precomputed_image_file": str(paths["image"]),
            "precomputed_item_ids": str(ids_file)}


def _full_scores(net, users):
    net.eval()
    with torch.no_grad():
        scores = net.full_sort_predict(Interaction({net.USER_ID: users}))
    return scores.view(len(users), net.n_items)


# ---------------------------------------------------------------------------------------------- command line
@pytest.mark.parametrize("mode", ["cached", "end2end", "precomputed"])
def test_trains_one_epoch_through_the_cli_in_each_mode(root, mode, capsys):
    extra = {"feature_mode": mode}
    if mode == "precomputed":
        _, _, data, *_ = build("MMFusion", "amazon-demo", config_dict=_overrides(root))
        extra.update(_write_precomputed(root, data))
    assert main(_argv(root, **extra)) == 0
    out = capsys.readouterr().out
    assert "recall@20" in out and "mean attention over users" in out
    record = json.loads(Path(re.search(r"results: (\S+)", out).group(1)).read_text())
    assert record["epochs_trained"] == 1
    assert 0.0 <= record["test_result"]["recall@20"] <= 1.0
    for side in ("users", "items"):
        assert sum(record["attention"][side].values()) == pytest.approx(1.0, abs=1e-4)


def test_bad_feature_mode_is_a_one_line_error(root, capsys):
    assert main(_argv(root, feature_mode="magic")) == 2
    assert "feature_mode must be one of" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- scoring
def test_full_sort_predict_equals_predict_and_the_fm_formula(root):
    _, net, data, *_ = build("MMFusion", "amazon-demo", config_dict=_overrides(root))
    users = torch.tensor([1, 2, 7, data.user_num - 1])
    full = _full_scores(net, users)
    items = torch.arange(1, net.n_items)
    with torch.no_grad():
        for row, user in enumerate(users):
            pairs = Interaction({net.USER_ID: user.repeat(len(items)), net.ITEM_ID: items})
            torch.testing.assert_close(full[row, 1:], net.predict(pairs), rtol=1e-4, atol=1e-4)
        u, _, i, _ = net.represent(users, items)
        for row in range(len(users)):
            x = torch.cat([u[row].expand(len(items), -1), i], dim=1)
            torch.testing.assert_close(full[row, 1:], net.fm.brute_force(x), rtol=1e-4, atol=1e-4)


def test_saved_model_reloads_to_the_same_scores(root):
    config, net, _, train_data, valid_data, _ = build("MMFusion", "amazon-demo", config_dict=_overrides(root))
    trainer = make_trainer(config, net, train_data)
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    users = torch.arange(1, 20)
    before = _full_scores(net, users)
    _, again, *_ = load_data_and_model(trainer.saved_model_file)
    torch.testing.assert_close(_full_scores(again, users), before)


def test_missing_modalities_give_finite_scores_and_zero_weight(root):
    _, _, data, *_ = build("MMFusion", "amazon-demo", config_dict=_overrides(root))
    # one item with no feature rows at all, and a user whose every training item lacks them
    train = data.inter_feat
    user_tokens = data.field2id_token["user_id"]
    item_tokens = data.field2id_token["item_id"]
    first_user_items = {item_tokens[i] for i in train["item_id"][train["user_id"] == 1].tolist()}
    drop = first_user_items | {item_tokens[5]}
    extra = _write_precomputed(root, data, drop=drop)
    _, net, *_ = build("MMFusion", "amazon-demo", config_dict=_overrides(
        root, feature_mode="precomputed", modalities=["text", "image"], **extra))
    assert user_tokens[1]  # a real user
    scores = _full_scores(net, torch.tensor([1, 2]))
    assert torch.isfinite(scores[:, 1:]).all()
    net.eval()
    with torch.no_grad():
        user, user_alpha, item, item_alpha = net.represent(torch.tensor([1, 2]), torch.tensor([5, 6]))
    assert torch.equal(user_alpha[0], torch.zeros(2)) and torch.equal(user[0], torch.zeros_like(user[0]))
    assert torch.equal(item_alpha[0], torch.zeros(2))
    assert user_alpha[1].sum().item() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- training
def test_end2end_gradient_reaches_every_encoder(root):
    _, net, _, train_data, *_ = build("MMFusion", "amazon-demo", config_dict=_overrides(root, feature_mode="end2end"))
    net.train()
    batch = next(iter(train_data))
    net.calculate_loss(batch).backward()
    for name in ("text_encoder", "image_encoder", "graph_encoder", "item_fusion", "user_fusion", "fm"):
        grads = [p.grad for p in getattr(net, name).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"no gradient reaches {name}"


def test_user_features_come_from_training_interactions_only(root):
    _, _, data, train_data, valid_data, test_data = build("MMFusion", "amazon-demo", config_dict=_overrides(root))
    extra = _write_precomputed(root, data)
    overrides = _overrides(root, feature_mode="precomputed", **extra)
    _, net, *_ = build("MMFusion", "amazon-demo", config_dict=overrides)
    train = train_data._dataset.inter_feat
    user = 3
    train_items = set(train["item_id"][train["user_id"] == user].tolist())
    held_out = set()
    for loader in (valid_data, test_data):
        feat = loader._dataset.inter_feat
        held_out |= set(feat["item_id"][feat["user_id"] == user].tolist())
    held_out -= train_items
    assert held_out
    start, end = net.history_rowptr[user].item(), net.history_rowptr[user + 1].item()
    assert set(net.history_items[start:end].tolist()) == train_items
    # rewriting the features of the user's validation and test items leaves the user's vectors unchanged
    item_tokens = data.field2id_token["item_id"]
    ids = Path(extra["precomputed_item_ids"]).read_text().split()
    rows = [ids.index(item_tokens[i]) for i in held_out]
    for key in ("precomputed_text_file", "precomputed_image_file"):
        feats = np.load(extra[key])
        feats[rows] += 100.0
        np.save(extra[key], feats)
    _, changed, *_ = build("MMFusion", "amazon-demo", config_dict=overrides)
    for modality in ("text", "image"):
        torch.testing.assert_close(getattr(changed, f"user_{modality}_feat")[user],
                                   getattr(net, f"user_{modality}_feat")[user])
    assert not torch.equal(changed.item_text_feat, net.item_text_feat)


# ---------------------------------------------------------------------------------------------- defaults
def _keys_read(paths) -> set[str]:
    patterns = [re.compile(r"config\[\s*[\"']([A-Za-z_][A-Za-z_0-9]*)[\"']\s*\]"),
                re.compile(r"config_value\(\s*config,\s*[\"']([A-Za-z_][A-Za-z_0-9]*)[\"']")]
    return {key for path in paths for pattern in patterns
            for key in pattern.findall(Path(path).read_text(encoding="utf-8"))}


def test_yaml_defaults_are_exactly_the_keys_the_model_reads():
    import recbole_mmfusion

    package = Path(recbole_mmfusion.__file__).parent
    code = [package / "models" / "mmfusion.py", package / "modalities.py", *sorted((package / "pretrain").glob("*.py"))]
    from recbole_mmfusion.pretrain import features

    read = _keys_read(code) | set(features.TEXT_KEYS + features.IMAGE_KEYS + features.OTHER_KEYS)
    declared = set(yaml.safe_load((properties_dir() / "model" / "MMFusion.yaml").read_text()))
    recbole_keys = {"USER_ID_FIELD", "ITEM_ID_FIELD", "NEG_PREFIX", "data_path", "device", "seed", "dataset",
                    "learning_rate", "epochs", "reproducibility", "show_progress"}
    assert declared - read == {"learning_rate"}, "YAML keys nothing reads"
    assert read - declared - recbole_keys == set(), "keys read without a default in MMFusion.yaml"


def test_a_missing_feature_file_is_a_one_line_error(root, capsys):
    argv = _argv(root, feature_mode="precomputed", precomputed_text_file=str(root / "nowhere.npy"),
                 precomputed_image_file=str(root / "nowhere.npy"), precomputed_item_ids=str(root / "ids.txt"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere.npy" in err and "no such file" in err


def test_loading_weights_clears_the_evaluation_cache(root):
    # the trainer loads the best checkpoint before testing; the test must not score with the last epoch's cache
    _, net, *_ = build("MMFusion", "amazon-demo", config_dict=_overrides(root))
    users = torch.arange(1, 10)
    before = _full_scores(net, users)
    net.load_state_dict({k: v + 0.1 if v.is_floating_point() else v for k, v in net.state_dict().items()})
    assert not torch.allclose(_full_scores(net, users), before)
