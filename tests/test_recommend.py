"""Top-K recommendations and model files: known users against the evaluator's full ranking, new users from a
history, batch JSON lines, and every way a model file can be unusable (pickled, truncated, another model or
dataset, a missing feature file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_mmfusion.cli import main
from recbole_mmfusion.model_file import FORMAT, ModelFileError, load, read
from recbole_mmfusion.modalities import MissingSidecarError
from recbole_mmfusion.quick_start import build, run
from recbole_mmfusion.recommend import RecommendError, Recommender, Request, read_requests

from test_mmfusion import TINY


def _overrides(folder: Path, **extra) -> dict:
    return {**TINY, "data_path": str(folder / "dataset"), "checkpoint_dir": str(folder / "saved"),
            "results_dir": str(folder / "results"), **extra}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny amazon-demo with MMFusion (cached features) and BPR trained on it, and their model files."""
    folder = tmp_path_factory.mktemp("rec")
    files = {}
    for model, extra in (("MMFusion", {"epochs": 2}), ("BPR", {"epochs": 2, "embedding_size": 16})):
        record = run(model, "amazon-demo", config_dict=_overrides(folder, **extra))
        files[model] = Path(record["checkpoint"])
    return folder, files


def _train_histories(recommender):
    data = recommender.train_dataset.inter_feat
    histories = {}
    for user, item in zip(data["user_id"].tolist(), data["item_id"].tolist()):
        histories.setdefault(user, []).append(item)
    return histories


# ---------------------------------------------------------------------------------------------- model files
def test_model_file_loads_with_weights_only_and_holds_the_id_maps(trained):
    _, files = trained
    for path in files.values():
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["format"] == FORMAT and state["ids"]["items"][0] == "[PAD]"
        assert isinstance(state["config"], dict) and "device" not in state["config"]
    assert torch.load(files["MMFusion"], weights_only=True)["features"]["sha256"]  # the cache files it read


def test_reloaded_model_scores_as_trained(trained):
    folder, files = trained
    config, net, data, *_ = build("MMFusion", "amazon-demo", config_dict=_overrides(folder, epochs=2))
    _, again, *_ = load(files["MMFusion"])
    state = torch.load(files["MMFusion"], weights_only=True)["state_dict"]
    net.load_state_dict(state)
    net.eval()
    users = Interaction({"user_id": torch.arange(1, 30)})
    torch.testing.assert_close(again.full_sort_predict(users), net.full_sort_predict(users))


def test_pickled_checkpoint_is_refused_unless_trusted(trained, tmp_path):
    folder, files = trained
    from recbole.utils import get_trainer

    config, net, _, train_data, _, _ = build("BPR", "amazon-demo", config_dict=_overrides(folder, embedding_size=16))
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)  # RecBole's own, pickling saver
    trainer.saved_model_file = str(tmp_path / "pickled.pth")
    trainer._save_checkpoint(0, verbose=False)
    with pytest.raises(ModelFileError, match="pickled Python objects.*--trust-pickle"):
        read(trainer.saved_model_file)
    _, model, *_ = load(trainer.saved_model_file, trust_pickle=True)
    assert type(model).__name__ == "BPR"


def test_truncated_file_gives_a_clear_error(trained, tmp_path):
    _, files = trained
    data = files["BPR"].read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        read(cut)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ModelFileError, match="cut.pth|empty.pth"):
        read(tmp_path / "empty.pth")
    with pytest.raises(ModelFileError, match="not found"):
        read(tmp_path / "absent.pth")


def test_file_of_another_model_or_another_dataset_is_refused(trained, tmp_path):
    _, files = trained
    with pytest.raises(ModelFileError, match="holds the model BPR, not MMFusion"):
        load(files["BPR"], expect_model="MMFusion", with_loaders=False)
    state = torch.load(files["BPR"], weights_only=True)
    weights = dict(state["state_dict"])
    weights["projection.weight"] = weights.pop("item_embedding.weight")  # another model's parameter names
    torch.save(dict(state, state_dict=weights), tmp_path / "other_weights.pth")
    with pytest.raises(ModelFileError, match="does not fit a BPR.*item_embedding.weight"):
        load(tmp_path / "other_weights.pth", with_loaders=False)
    ids = dict(state["ids"], items=state["ids"]["items"][:1] + state["ids"]["items"][1:][::-1])
    torch.save(dict(state, ids=ids), tmp_path / "other_data.pth")
    with pytest.raises(ModelFileError, match="another version of dataset 'amazon-demo'"):
        load(tmp_path / "other_data.pth", with_loaders=False)


def test_missing_feature_file_is_named_not_recomputed(trained, tmp_path):
    folder, files = trained
    cache = folder / "dataset" / "amazon-demo" / "mmfusion"
    sha = torch.load(files["MMFusion"], weights_only=True)["features"]
    key = sha["keys"]["text"]
    target = cache / f"item_text-{key}.npy"
    moved = tmp_path / target.name
    shutil.move(target, moved)
    try:
        with pytest.raises(MissingSidecarError, match=f"item_text-{key}.npy not found"):
            load(files["MMFusion"], with_loaders=False)
        assert not target.exists()  # nothing was encoded again in its place
    finally:
        shutil.move(moved, target)


def test_replaced_feature_file_is_refused(trained, tmp_path):
    folder, files = trained
    from recbole_mmfusion.modalities import FeatureFileError
    from recbole_mmfusion.pretrain import read_verified_npy, write_npy_with_manifest

    cache = folder / "dataset" / "amazon-demo" / "mmfusion"
    key = torch.load(files["MMFusion"], weights_only=True)["features"]["keys"]["text"]
    npy, manifest = cache / f"item_text-{key}.npy", cache / f"item_text-{key}.json"
    backup = [shutil.copy(p, tmp_path / p.name) for p in (npy, manifest)]
    meta = json.loads(manifest.read_text())
    array, _ = read_verified_npy(npy, manifest, key=key, ids=meta["ids"])
    extra = {k: v for k, v in meta.items() if k not in ("format", "file", "shape", "dtype", "sha256")}
    write_npy_with_manifest(npy, manifest, array + 1, **extra)  # a consistent file, but not the trained one
    try:
        with pytest.raises(FeatureFileError, match="is not the file the model was trained with"):
            load(files["MMFusion"], with_loaders=False)
    finally:
        for saved, original in zip(backup, (npy, manifest)):
            shutil.copy(saved, original)


# ---------------------------------------------------------------------------------------------- recommend
@pytest.mark.parametrize("model", ["MMFusion", "BPR"])
def test_known_user_gets_full_sort_predicts_top_k_of_unseen_items(trained, model):
    _, files = trained
    rec = Recommender(files[model], exclude="train")
    histories = _train_histories(rec)
    users = [1, 5, 17]
    results = rec.recommend_block([Request(label=rec.user_tokens[u], user=rec.user_tokens[u]) for u in users], k=10)
    scores = rec.model.full_sort_predict(Interaction({"user_id": torch.tensor(users)})).view(len(users), -1)
    for row, (user, result) in enumerate(zip(users, results)):
        expected = scores[row].clone()
        expected[0] = float("-inf")
        expected[histories[user]] = float("-inf")
        top = torch.topk(expected, 10)
        ids = [rec.item_index[e["item_id"]] for e in result["items"]]
        got = [e["score"] for e in result["items"]]
        assert ids == top.indices.tolist()
        assert got == sorted(got, reverse=True) and len(ids) == 10
        assert not set(ids) & set(histories[user])
        torch.testing.assert_close(torch.tensor(got), top.values.float())


def test_exclude_all_leaves_out_valid_and_test_items_too(trained):
    _, files = trained
    rec = Recommender(files["BPR"], exclude="all")
    inter = rec.dataset.inter_feat
    everything = set(inter["item_id"][inter["user_id"] == 3].tolist())
    result = rec.recommend_block([Request(label="u", user=rec.user_tokens[3])], k=rec.n_items)[0]
    assert len(result["items"]) == rec.n_items - 1 - len(everything)  # every other item, never more
    assert not {rec.item_index[e["item_id"]] for e in result["items"]} & everything
    assert len(everything) > len(_train_histories(rec)[3])  # the split's held-out items were there to exclude


def test_new_user_with_a_training_users_history_and_reviews_gets_the_same_list(trained):
    folder, files = trained
    rec = Recommender(files["MMFusion"], exclude="train")
    histories = _train_histories(rec)
    texts = pq.read_table(folder / "dataset" / "amazon-demo" / "amazon-demo.user_text.parquet").to_pandas()
    texts = dict(zip(texts["user_id"].astype(str), texts["text"].fillna("")))
    checked = 0
    for user in (2, 9, 21):
        token = rec.user_tokens[user]
        history = [rec.item_tokens[i] for i in histories[user]]
        reviews = texts.get(token, "").split("\n") if texts.get(token) else []
        known, new = rec.recommend_block([Request(label="known", user=token),
                                          Request(label="new", history=history, reviews=reviews)], k=10)
        assert new["new_user"] and not known["new_user"]
        assert [e["item_id"] for e in new["items"]] == [e["item_id"] for e in known["items"]]
        torch.testing.assert_close(torch.tensor([e["score"] for e in new["items"]]),
                                   torch.tensor([e["score"] for e in known["items"]]), rtol=1e-4, atol=1e-4)
        assert new["user_attention"] == pytest.approx(known["user_attention"], abs=1e-3)
        checked += bool(reviews)
    assert checked  # at least one of them went through the review encoder


def test_explanations_name_history_items_and_attention_sums_to_one(trained):
    _, files = trained
    rec = Recommender(files["MMFusion"], exclude="all")
    history = set(_train_histories(rec)[4])
    result = rec.recommend_block([Request(label="u", user=rec.user_tokens[4])], k=5)[0]
    assert sum(result["user_attention"].values()) == pytest.approx(1, abs=1e-3)
    for entry in result["items"]:
        assert sum(entry["attention"].values()) == pytest.approx(1, abs=1e-3)
        assert entry["because"] and entry["reason"].startswith("because you liked")
        for liked in entry["because"].values():
            assert rec.item_index[liked["item_id"]] in history and -1 <= liked["similarity"] <= 1 + 1e-6


def test_bad_requests(trained):
    _, files = trained
    mm, bpr = Recommender(files["MMFusion"]), Recommender(files["BPR"])
    with pytest.raises(RecommendError, match="is not in dataset"):
        mm.resolve(Request(label="x", user="nobody"))
    with pytest.raises(RecommendError, match="holds no item"):
        mm.resolve(Request(label="x", history=["NOPE1", "NOPE2"]))
    with pytest.raises(RecommendError, match="it is empty"):
        mm.resolve(Request(label="x", history=[]))
    with pytest.raises(RecommendError, match="BPR represents users by embeddings"):
        bpr.resolve(Request(label="x", history=[bpr.item_tokens[1]]))
    user, items, unknown = mm.resolve(Request(label="x", history=[mm.item_tokens[3], "NOPE", mm.item_tokens[3]]))
    assert user is None and items == [3] and unknown == ["NOPE"]


def test_read_requests(tmp_path):
    path = tmp_path / "users.jsonl"
    path.write_text('\n'.join(['U1', '{"user": "U2"}', '', '{"id": "n1", "history": ["I1", "I2"], "reviews": '
                               '["Great, really."]}', '{"history": "I3,I4"}', '{not json', '{"id": "x"}',
                               '{"history": 5}']))
    got = list(read_requests(path))
    assert [(r.label, r.user, r.history) for r in got[:4]] == [
        ("U1", "U1", []), ("U2", "U2", []), ("n1", None, ["I1", "I2"]), ("line 5", None, ["I3", "I4"])]
    assert got[2].reviews == ["Great, really."]
    assert [r.error.split(": ")[0] for r in got[4:]] == [f"{path}:6", f"{path}:7", f"{path}:8"]


def test_cli_single_user_json_and_batch_file(trained, tmp_path, capsys):
    _, files = trained
    rec = Recommender(files["MMFusion"])
    user = rec.user_tokens[6]
    assert main(["recommend", f"--model-file={files['MMFusion']}", f"--user={user}", "--k=4", "--format=json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["user"] == user and len(single["items"]) == 4 and "reason" in single["items"][0]

    users = tmp_path / "users.jsonl"
    lines = [json.dumps({"user": rec.user_tokens[u]}) for u in range(1, 40)]
    lines += [json.dumps({"id": "new", "history": [rec.item_tokens[2], rec.item_tokens[8]]}), "nobody", "{bad"]
    users.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out" / "recs.jsonl"
    assert main(["recommend", f"--model-file={files['MMFusion']}", f"--users-file={users}", "--k=3",
                 f"--output={out}", "--batch-size=16", "--no-explain"]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 42 and [r["user"] for r in results[:39]] == [rec.user_tokens[u] for u in range(1, 40)]
    assert results[39]["new_user"] and len(results[39]["items"]) == 3
    assert "is not in dataset" in results[40]["error"] and ":42:" in results[41]["error"]
    assert "attention" not in results[0]["items"][0]
    assert "42 users (2 errors)" in capsys.readouterr().err


def test_cli_errors_are_one_line(trained, tmp_path, capsys):
    _, files = trained
    cut = tmp_path / "cut.pth"
    cut.write_bytes(files["BPR"].read_bytes()[:1000])
    for argv, message in (([f"--model-file={cut}", "--user=x"], "truncated"),
                          ([f"--model-file={files['BPR']}", "--user=nobody"], "is not in dataset"),
                          ([f"--model-file={files['BPR']}", "--history=a,b"], "cannot be scored without retraining"),
                          ([f"--model-file={files['MMFusion']}", "--history=,"], "it is empty"),
                          ([f"--model-file={files['BPR']}", "--user=x", "--model=VBPR"], "holds the model BPR, not VBPR")):
        assert main(["recommend", *argv]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_reviews_for_a_model_that_does_not_read_them_fail_that_request_alone(trained):
    _, files = trained
    rec = Recommender(files["MMFusion"], overrides={"user_text_source": "items"})
    good = Request(label="good", history=[rec.item_tokens[2]])
    bad = Request(label="bad", history=[rec.item_tokens[2]], reviews=["Nice."])
    first, second = rec.recommend_block([good, bad], k=3)
    assert len(first["items"]) == 3 and "does not read user reviews" in second["error"]


def test_moved_data_and_changed_split_are_reported(trained, tmp_path, capsys):
    folder, files = trained
    assert main(["recommend", f"--model-file={files['BPR']}", "--user=x", f"--data_path={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "is not at" in err and "--data_path" in err and "Traceback" not in err
    moved = tmp_path / "moved"
    shutil.copytree(folder / "dataset" / "amazon-demo", moved / "amazon-demo")
    rec = Recommender(files["BPR"], overrides={"data_path": str(moved)})  # the same data elsewhere loads
    assert rec.config["data_path"].startswith(str(moved))
    train = moved / "amazon-demo" / "amazon-demo.train.inter"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[:-1]) + "\n")  # one training interaction less
    with pytest.raises(ModelFileError, match="other training interactions"):
        load(files["BPR"], overrides={"data_path": str(moved)}, with_loaders=False)


def test_users_file_with_bad_bytes_reports_the_line(trained, tmp_path):
    _, files = trained
    rec = Recommender(files["BPR"])
    users = tmp_path / "users.jsonl"
    users.write_bytes(rec.user_tokens[1].encode() + b"\n\xff\xfe\n" + rec.user_tokens[2].encode() + b"\n")
    results = list(rec.stream(read_requests(users), k=2))
    assert [("error" in r) for r in results] == [False, True, False]
    assert f"{users}:2: not UTF-8" in results[1]["error"]


def test_failed_run_leaves_no_output_file(trained, tmp_path):
    _, files = trained
    out = tmp_path / "recs.jsonl"
    assert main(["recommend", f"--model-file={files['BPR']}", "--user=nobody", f"--output={out}"]) == 2
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temp file
