"""MMConfig: plugin properties, precedence, key checking, YAML errors; the model lookup."""

from __future__ import annotations

import pytest
from recbole.model.general_recommender import BPR, LightGCN

import recbole_mmfusion  # noqa: F401
from recbole_mmfusion import registry
from recbole_mmfusion.config import ConfigError, MMConfig, known_config_keys, load_yaml_file
from recbole_mmfusion.registry import UnknownModelError, get_model

from atomic_fixtures import tiny_config_dict, write_atomic_dataset


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_atomic_dataset(tmp_path / "data")


def test_properties_are_loaded_over_recbole_defaults(root):
    config = MMConfig("BPR", "tiny", config_dict=tiny_config_dict(root))
    assert config["valid_metric"] == "NDCG@20"  # RecBole's default is MRR@10
    assert config["topk"] == [10, 20]
    assert config["benchmark_filename"] == ["train", "valid", "test"]
    assert config["eval_memory_mb"] == 512
    assert config["embedding_size"] == 64  # RecBole's BPR.yaml still applies


def test_dataset_properties_apply_to_their_dataset_only(root):
    demo = MMConfig("BPR", "amazon-demo", config_dict={"use_gpu": False})
    assert demo["dataset_source"] == "demo" and demo["demo_users"] == 2000
    other = MMConfig("BPR", "tiny", config_dict=tiny_config_dict(root))
    assert other["dataset_source"] is None


def test_precedence_properties_then_files_then_overrides(root, tmp_path):
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    first.write_text("valid_metric: Recall@10\nlearning_rate: 0.01\nembedding_size: 32\n")
    second.write_text("learning_rate: 0.02\n")
    config = MMConfig("BPR", "tiny", config_file_list=[str(first), str(second)],
                      config_dict={**tiny_config_dict(root), "embedding_size": "16"})
    assert config["valid_metric"] == "Recall@10"  # file over properties
    assert config["learning_rate"] == 0.02  # later file over earlier file
    assert config["embedding_size"] == 16  # override over files, converted like RecBole's command line


def test_sys_argv_is_not_read(root, monkeypatch):
    monkeypatch.setattr("sys.argv", ["prog", "--learning_rate=0.5"])
    config = MMConfig("BPR", "tiny", config_dict=tiny_config_dict(root))
    assert config["learning_rate"] == 0.001


def test_unknown_key_in_overrides_names_it_and_suggests(root):
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rat'.*learning_rate"):
        MMConfig("BPR", "tiny", config_dict={**tiny_config_dict(root), "learning_rat": 0.1})


def test_unknown_key_in_file_names_the_file(root, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\ntrain_batchsize: 10\n")
    with pytest.raises(ConfigError, match=r"'train_batchsize' in .*bad.yaml"):
        MMConfig("BPR", "tiny", config_file_list=[str(path)], config_dict=tiny_config_dict(root))


def test_known_keys_cover_recbole_and_plugin_keys():
    keys = known_config_keys()
    assert {"learning_rate", "n_layers", "reg_weight", "benchmark_filename", "nproc", "eval_memory_mb",
            "demo_users", "worker", "MAX_ITEM_LIST_LENGTH"} <= keys
    assert "learning_rat" not in keys


def test_malformed_yaml_reports_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("epochs: 3\nmetrics: [Recall, NDCG\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*broken.yaml:\d+:\d+"):
        load_yaml_file(path)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml_file(listing)
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml_file(tmp_path / "absent.yaml")


def test_model_lookup_is_case_insensitive_and_suggests():
    assert get_model("LightGCN") is LightGCN
    assert get_model("lightgcn") is LightGCN
    with pytest.raises(UnknownModelError, match=r"unknown model 'LightGNC'.*lightgcn"):
        get_model("LightGNC")


def test_registered_plugin_model_shadows_recbole(monkeypatch):
    monkeypatch.setattr(registry, "_registered", {})

    @registry.register_model
    class Bpr(BPR):
        """A user's own variant registered under RecBole's name."""

    assert get_model("BPR") is Bpr
    monkeypatch.setattr(registry, "_registered", {})
    assert get_model("BPR") is BPR


def test_key_check_can_be_turned_off_for_models_of_your_own(root, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("my_new_hyperparameter: 3\ncheck_config_keys: False\n")
    config = MMConfig("BPR", "tiny", config_file_list=[str(path)], config_dict=tiny_config_dict(root))
    assert config["my_new_hyperparameter"] == 3
    config = MMConfig("BPR", "tiny", config_dict={**tiny_config_dict(root), "my_knob": "2",
                                                 "check_config_keys": "False"})
    assert config["my_knob"] == 2
    with pytest.raises(ConfigError, match="my_knob"):
        MMConfig("BPR", "tiny", config_dict={**tiny_config_dict(root), "my_knob": "2"})
