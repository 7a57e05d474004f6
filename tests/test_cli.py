"""The command line end to end on a tiny generated demo dataset, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import recbole_mmfusion  # noqa: F401
from recbole_mmfusion.cli import main
from recbole_mmfusion.quick_start import load_data_and_model

REPO = Path(__file__).resolve().parents[1]
TINY_DEMO = ["--demo_users=150", "--demo_items=70", "--demo_image_size=16", "--epochs=1", "--train_batch_size=256"]


def _workspace_args(root: Path) -> list[str]:
    return [f"--data_path={root / 'dataset'}", f"--checkpoint_dir={root / 'saved'}", f"--results_dir={root / 'results'}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """LightGCN and BPR trained for one epoch through the real script, in a fresh folder."""
    root = tmp_path_factory.mktemp("cli")
    records = {}
    for model in ("LightGCN", "BPR"):
        completed = subprocess.run(
            [sys.executable, str(REPO / "run_recbole_mm.py"), f"--model={model}", "--dataset=amazon-demo",
             *TINY_DEMO, *_workspace_args(root)],
            cwd=root, capture_output=True, text=True, timeout=600,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert "Test results for" in completed.stdout
        (results_file,) = (root / "results" / "amazon-demo").glob(f"{model}-*.json")
        records[model] = json.loads(results_file.read_text())
        records[model]["stdout"] = completed.stdout
        records[model]["stderr"] = completed.stderr
    return root, records


@pytest.mark.slow
def test_script_generates_converts_trains_and_reports(trained):
    root, records = trained
    dataset = root / "dataset" / "amazon-demo"
    for part in ("train", "valid", "test"):
        assert (dataset / f"amazon-demo.{part}.inter").is_file()
    assert (root / "dataset" / "raw" / "amazon-demo" / "reviews.jsonl.gz").is_file()
    for model, record in records.items():
        expected = {f"{m}@{k}" for m in ("recall", "ndcg", "mrr", "hit", "precision") for k in (10, 20)}
        assert set(record["test_result"]) == expected
        assert all(0.0 <= v <= 1.0 for v in record["test_result"].values())
        assert record["epochs_trained"] == 1 and record["best_epoch"] == 0
        assert record["seconds_per_epoch"] > 0 and record["parameters"] > 0
        assert Path(record["checkpoint"]).is_file()
        assert "users per batch" in record["stderr"] + record["stdout"]
    # the second model reused the converted files instead of building them again
    assert "Converting" not in records["BPR"]["stderr"]


@pytest.mark.slow
def test_checkpoint_reloads_to_the_same_test_metrics(trained, monkeypatch):
    root, records = trained
    monkeypatch.chdir(root)
    from recbole.utils import get_trainer

    config, model, _, _, _, test_data = load_data_and_model(records["LightGCN"]["checkpoint"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    result = trainer.evaluate(test_data, load_best_model=False)
    for name, value in records["LightGCN"]["test_result"].items():
        assert float(result[name]) == pytest.approx(value, abs=1e-4)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_unknown_model_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--model=LightGNC", "--dataset=amazon-demo", *_workspace_args(tmp_path)]) == 2
    assert "unknown model 'LightGNC'" in _error_line(capsys)


def test_missing_dataset_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--model=BPR", "--dataset=no-such-data", *_workspace_args(tmp_path)]) == 2
    line = _error_line(capsys)
    assert "no-such-data" in line and "not found" in line


def test_amazon_dataset_without_raw_files_says_where_to_put_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--model=BPR", "--dataset=amazon-electronics", "--download=False", *_workspace_args(tmp_path)]) == 2
    line = _error_line(capsys)
    assert "Electronics.jsonl.gz" in line and "meta_Electronics.jsonl.gz" in line


def test_unknown_config_key_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--model=BPR", "--dataset=amazon-demo", "--learning_rat=0.1", *_workspace_args(tmp_path)]) == 2
    assert "learning_rate" in _error_line(capsys)


def test_malformed_yaml_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1, 2\n")
    assert main(["--model=BPR", "--dataset=amazon-demo", f"--config_files={broken}",
                 *_workspace_args(tmp_path)]) == 2
    assert "malformed YAML" in _error_line(capsys)


def test_stray_argument_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--model=BPR", "--dataset=amazon-demo", "epochs=3"]) == 2
    assert "expected --key=value" in _error_line(capsys)
