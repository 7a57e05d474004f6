"""VBPR on a tiny generated demo dataset: full ranking against pairwise scores and the formula, items without a
feature, YAML defaults against the keys read (and MMFusion's encoder keys), and the command line."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from recbole.data.interaction import Interaction

from recbole_mmfusion.cli import main
from recbole_mmfusion.config import properties_dir
from recbole_mmfusion.quick_start import build

#: as tests/test_mmfusion.py: encoders small enough that pretraining and encoding take seconds on a CPU
TINY = {
    "demo_users": 120, "demo_items": 60, "demo_image_size": 16, "image_size": 32,
    "text_vocab_size": 300, "text_dim": 32, "text_layers": 1, "text_heads": 2, "text_hidden_dim": 64,
    "text_max_length": 48, "image_backbone": "resnet18", "image_input_size": 32,
    "text_pretrain_epochs": 1, "image_pretrain_epochs": 1, "pretrain_batch_size": 16, "encode_batch_size": 32,
    "embedding_size": 8, "visual_embedding_size": 6,
    "epochs": 1, "train_batch_size": 256, "show_progress": False, "use_gpu": False, "state": "WARNING",
}
DIMS = {"text": 12, "image": 20}


def _overrides(folder: Path, **extra) -> dict:
    return {**TINY, "data_path": str(folder / "dataset"), "checkpoint_dir": str(folder / "saved"),
            "results_dir": str(folder / "results"), **extra}


def _argv(folder: Path, **extra) -> list[str]:
    args = ["--model=VBPR", "--dataset=amazon-demo"]
    for key, value in _overrides(folder, **extra).items():
        args.append(f"--{key}={json.dumps(value) if isinstance(value, list) else value}")
    return args


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``(folder, dataset)``: the tiny amazon-demo, generated and converted once (RecBole's BPR builds it)."""
    folder = tmp_path_factory.mktemp("vbpr")
    _, _, data, *_ = build("BPR", "amazon-demo", config_dict=_overrides(folder))
    return folder, data


def _write_precomputed(folder: Path, dataset, drop=()) -> dict:
    """Random item features (mean 2, std 3) for every item except the internal ids ``drop``, rows reversed."""
    tokens = dataset.field2id_token["item_id"]
    ids = [tokens[i] for i in range(1, len(tokens)) if i not in set(drop)][::-1]
    rng = np.random.default_rng(0)
    paths = {}
    for channel, dim in DIMS.items():
        paths[channel] = folder / f"{channel}_feat.npy"
        np.save(paths[channel], rng.normal(2.0, 3.0, size=(len(ids), dim)).astype(np.float32))
    ids_file = folder / "item_ids.txt"
    ids_file.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return {"feature_mode": "precomputed", "precomputed_text_file": str(paths["text"]),
            "precomputed_image_file": str(paths["image"]), "precomputed_item_ids": str(ids_file)}


def _model(demo, drop=(), **extra):
    folder, data = demo
    overrides = _overrides(folder, **_write_precomputed(folder, data, drop), **extra)
    config, net, _, train_data, *_ = build("VBPR", "amazon-demo", config_dict=overrides)
    return config, net, train_data


def _train_steps(net, train_data, steps=3):
    """A few Adam steps, with biases moved away from their zero initialisation."""
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    net.train()
    for _, batch in zip(range(steps), train_data):
        optimizer.zero_grad()
        net.calculate_loss(batch).backward()
        optimizer.step()
    net.eval()


def _full_scores(net, users):
    net.eval()
    with torch.no_grad():
        scores = net.full_sort_predict(Interaction({net.USER_ID: users}))
    return scores.view(len(users), net.n_items)


# ---------------------------------------------------------------------------------------------- scoring
def _assert_full_sort_equals_predict(net, users):
    full = _full_scores(net, users)
    assert full.shape == (len(users), net.n_items)
    items = torch.arange(net.n_items)
    with torch.no_grad():
        for row, user in enumerate(users):
            pairs = Interaction({net.USER_ID: user.repeat(len(items)), net.ITEM_ID: items})
            torch.testing.assert_close(full[row], net.predict(pairs), rtol=0, atol=1e-5)


def test_full_sort_predict_equals_predict_after_training(demo):
    _, net, train_data = _model(demo, vbpr_channels=["image", "text"])
    users = torch.tensor([1, 2, 7, net.n_users - 1])
    _assert_full_sort_equals_predict(net, users)  # fills the evaluation cache
    _train_steps(net, train_data)  # training must clear it
    _assert_full_sort_equals_predict(net, users)
    # the trainer loads the best checkpoint before testing: loading weights must clear it too
    net.load_state_dict({k: v + 0.1 for k, v in net.state_dict().items()})
    _assert_full_sort_equals_predict(net, users)


def test_score_is_the_vbpr_formula_on_standardised_features(demo):
    config, net, _ = _model(demo, vbpr_channels=["image", "text"])
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_()
    ids = Path(config["precomputed_item_ids"]).read_text().split()
    tokens = demo[1].field2id_token["item_id"]
    rows = [ids.index(tokens[i]) for i in range(1, net.n_items)]
    expected_feats = {}
    for channel in ("image", "text"):
        raw = np.load(config[f"precomputed_{channel}_file"])[rows].astype(np.float64)
        z = (raw - raw.mean(axis=0)) / raw.std(axis=0) / np.sqrt(raw.shape[1])
        expected_feats[channel] = torch.tensor(np.vstack([np.zeros((1, z.shape[1])), z]), dtype=torch.float32)
        torch.testing.assert_close(getattr(net, f"item_{channel}_feat"), expected_feats[channel],
                                   rtol=1e-4, atol=1e-4)
    pairs = [(1, 1), (3, 9), (7, 20), (net.n_users - 1, net.n_items - 1)]
    users, items = map(torch.tensor, zip(*pairs))
    with torch.no_grad():
        got = net.predict(Interaction({net.USER_ID: users, net.ITEM_ID: items}))
        for k, (u, i) in enumerate(pairs):
            score = net.item_bias.weight[i, 0] + net.user_embedding.weight[u] @ net.item_embedding.weight[i]
            for channel in ("image", "text"):
                f = getattr(net, f"item_{channel}_feat")[i]
                score = score + net.user_content[channel].weight[u] @ (net.projection[channel].weight @ f)
                score = score + net.content_bias[channel] @ f
            assert got[k].item() == pytest.approx(score.item(), rel=1e-5, abs=1e-4)


def test_an_item_without_a_feature_has_a_zero_content_term(demo, caplog):
    with caplog.at_level(logging.WARNING, logger="recbole_mmfusion.models.vbpr"):
        _, net, _ = _model(demo, drop=(2,))
    n = net.n_items - 1
    assert net.feature_stats["items"] == n and net.feature_stats["items_without_image"] == 1
    assert f"VBPR: 1 of {n} items have no image feature; their image term is zero" in caplog.text
    assert torch.equal(net.item_image_feat[2], torch.zeros(DIMS["image"]))
    assert torch.equal(net.item_image_feat[0], torch.zeros(DIMS["image"]))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_()
        users = torch.tensor([1, 5, 9])
        got = net.predict(Interaction({net.USER_ID: users, net.ITEM_ID: torch.full((3,), 2)}))
        plain = net.item_bias.weight[2, 0] + net.user_embedding.weight[users] @ net.item_embedding.weight[2]
    torch.testing.assert_close(got, plain)


# ---------------------------------------------------------------------------------------------- defaults
def _keys_read(paths) -> set[str]:
    patterns = [re.compile(r"config\[\s*[\"']([A-Za-z_][A-Za-z_0-9]*)[\"']\s*\]"),
                re.compile(r"config_value\(\s*config,\s*[\"']([A-Za-z_][A-Za-z_0-9]*)[\"']")]
    return {key for path in paths for pattern in patterns
            for key in pattern.findall(Path(path).read_text(encoding="utf-8"))}


def _yaml(name: str) -> dict:
    return yaml.safe_load((properties_dir() / "model" / name).read_text())


#: keys the model sets in the config view it gives the feature pipeline (so VBPR.yaml does not declare them)
VIEW_KEYS = {"modalities", "user_text_source"}


def test_yaml_keys_match_the_keys_read():
    import recbole_mmfusion
    from recbole_mmfusion.pretrain import features

    package = Path(recbole_mmfusion.__file__).parent
    code = [package / "models" / "vbpr.py", package / "modalities.py", *sorted((package / "pretrain").glob("*.py"))]
    read = (_keys_read(code) | set(features.TEXT_KEYS + features.IMAGE_KEYS + features.OTHER_KEYS)) - VIEW_KEYS
    declared = set(_yaml("VBPR.yaml"))
    recbole_keys = {"USER_ID_FIELD", "ITEM_ID_FIELD", "NEG_PREFIX", "data_path", "device", "seed", "dataset",
                    "learning_rate", "epochs", "reproducibility", "show_progress"}
    assert declared - read == {"learning_rate"}, "YAML keys nothing reads"
    assert read - declared - recbole_keys == set(), "keys read without a default in VBPR.yaml"
    assert not declared & VIEW_KEYS


def test_encoder_keys_equal_mmfusion_so_the_feature_cache_is_shared():
    from recbole_mmfusion.pretrain import features

    shaping = (set(features.TEXT_KEYS + features.IMAGE_KEYS + features.OTHER_KEYS) - VIEW_KEYS) | {
        "feature_mode", "feature_cache_dir", "precomputed_text_file", "precomputed_image_file",
        "precomputed_item_ids"}
    for ours, theirs in (("VBPR.yaml", "MMFusion.yaml"), ("VBPR-cpu.yaml", "MMFusion-cpu.yaml")):
        vbpr, mmfusion = _yaml(ours), _yaml(theirs)
        assert {k: v for k, v in vbpr.items() if k in shaping} == {k: v for k, v in mmfusion.items() if k in shaping}
    assert shaping <= set(_yaml("VBPR.yaml"))


# ---------------------------------------------------------------------------------------------- command line
def _record(out: str) -> dict:
    return json.loads(Path(re.search(r"results: (\S+)", out).group(1)).read_text())


@pytest.mark.slow
def test_one_epoch_through_the_cli_with_cached_features(demo, capsys):
    folder, _ = demo
    assert main(_argv(folder)) == 0
    record = _record(capsys.readouterr().out)
    assert record["epochs_trained"] == 1 and 0.0 <= record["test_result"]["recall@20"] <= 1.0
    stats = record["feature_stats"]
    assert stats["items"] == record["n_items"] and 0 <= stats["items_without_image"] < stats["items"]
    assert "item_image" in stats["computed"] + stats["reused"]
    assert stats["items_without_image"] > 0  # the demo generator leaves ~10% of the items without a photo
    assert "user_text" not in stats["computed"]  # VBPR never encodes user text


@pytest.mark.slow
def test_mmfusion_reuses_the_features_vbpr_cached(demo):
    folder, _ = demo
    build("VBPR", "amazon-demo", config_dict=_overrides(folder, vbpr_channels=["image", "text"]))
    mmfusion = {"modalities": ["text", "image"], "fusion_dim": 8, "attention_dim": 8, "fm_factors": 4}
    _, net, *_ = build("MMFusion", "amazon-demo", config_dict=_overrides(folder, **mmfusion))
    assert {"item_text", "item_image"} <= set(net.feature_stats["reused"])
    assert net.feature_stats["computed"] == ["user_text"]  # VBPR left user text alone


@pytest.mark.slow
@pytest.mark.parametrize("channels", [["image", "text"], ["text"]])
def test_one_epoch_through_the_cli_with_precomputed_features(demo, channels, capsys):
    folder, data = demo
    extra = _write_precomputed(folder, data, drop=(3, 4))
    assert main(_argv(folder, vbpr_channels=channels, **extra)) == 0
    stats = _record(capsys.readouterr().out)["feature_stats"]
    assert stats == {"items": data.item_num - 1, **{f"items_without_{c}": 2 for c in channels}}


@pytest.mark.slow
@pytest.mark.parametrize("option, message", [
    ({"vbpr_channels": ["audio"]}, "vbpr_channels must be a non-empty subset of ['image', 'text']"),
    ({"feature_mode": "end2end"}, "VBPR supports feature_mode cached or precomputed, not 'end2end'"),
])
def test_bad_options_are_a_one_line_error(demo, option, message, capsys):
    assert main(_argv(demo[0], **option)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
