"""Encoder pretraining from scratch and the keyed feature cache, at tiny sizes."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest
import torch

import recbole_mmfusion  # noqa: F401  (applies the RecBole patches)
from recbole_mmfusion.encoders.image import ImageEncoder
from recbole_mmfusion.encoders.text import TextEncoder
from recbole_mmfusion.modalities import load_modality_inputs
from recbole_mmfusion.pretrain import (cached_features, encoder_init, pretrain_image_encoder,
                                       pretrain_text_encoder, tokenize, train_or_load_tokenizer)

from test_modalities import BROKEN_IMAGE, N_ITEMS, NO_IMAGE, NO_TEXT, N_USERS, build_tiny_dataset, item_words

TINY = dict(modalities=["text", "image", "graph"], text_vocab_size=200, text_dim=32, text_layers=1, text_heads=2,
            text_hidden_dim=64, text_max_length=32, text_dropout=0.1, text_pooling="mean", user_text_source="auto",
            image_backbone="resnet18", image_input_size=32, pretrain_encoders=True, pretrain_batch_size=8,
            text_pretrain_epochs=1, text_pretrain_lr=5e-4, mlm_probability=0.15, image_pretrain_epochs=1,
            image_pretrain_lr=1e-3, contrast_dim=16, contrast_temperature=0.07, encode_batch_size=8)
CORPUS = [f"the {c} {t} is {a}" for c in ("red", "green", "blue", "black") for t in ("shoe", "bag", "hat", "cup")
          for a in ("new", "cheap", "nice")]


def _tiny_text_encoder(tokenizer):
    torch.manual_seed(0)
    return TextEncoder(vocab_size=len(tokenizer), dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_length=32)


def test_tokenizer_is_trained_once_then_reloaded(tmp_path):
    first = train_or_load_tokenizer(CORPUS, 200, tmp_path, "k1")
    assert (tmp_path / "tokenizer-k1.json").is_file()
    again = train_or_load_tokenizer(["entirely different words"], 200, tmp_path, "k1")  # same key: the file
    ids, mask = tokenize(first, CORPUS + ["an unseen zebra, much longer than the others " * 9], max_length=32)
    ids2, mask2 = tokenize(again, CORPUS + ["an unseen zebra, much longer than the others " * 9], max_length=32)
    assert torch.equal(ids, ids2) and torch.equal(mask, mask2)
    assert ids.shape == (len(CORPUS) + 1, 32) and ids.dtype == torch.long
    assert first.pad_token_id == 0 and (ids[:, 0] == first.cls_token_id).all()
    assert ids[0, int(mask[0].sum()) - 1] == first.sep_token_id and (ids[0, int(mask[0].sum()):] == 0).all()
    short, _ = tokenize(first, CORPUS[:2], max_length=32)
    assert short.shape[1] == 7  # padded to the longest, not to max_length
    assert first.unk_token_id in tokenize(first, ["zebra"], 32)[0][0].tolist()


def test_masked_lm_loss_decreases_and_repeats(tmp_path):
    tokenizer = train_or_load_tokenizer(CORPUS, 200, tmp_path, "mlm")
    runs = []
    for _ in range(2):
        encoder = _tiny_text_encoder(tokenizer)
        before = {k: v.clone() for k, v in encoder.bert.state_dict().items()}
        runs.append(pretrain_text_encoder(encoder, tokenizer, CORPUS * 3, epochs=8, lr=2e-3, batch_size=16,
                                          mlm_probability=0.15, max_length=32, seed=3, device="cpu"))
    losses = runs[0]["losses"]
    assert len(losses) == 8 and losses[-1] < 0.7 * losses[0], losses
    assert runs[1]["losses"] == losses  # seeded: a second run from the same start repeats exactly
    assert runs[0]["sequences_per_s"] > 0
    after = encoder.bert.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the trained weights came back


def test_image_text_contrast_loss_decreases():
    torch.manual_seed(0)
    colours = torch.tensor([[220, 30, 30], [30, 200, 40], [30, 40, 220], [200, 200, 30]], dtype=torch.float)
    labels = torch.arange(16) % 4
    noise = torch.randint(-20, 20, (16, 3, 32, 32)).float()
    images = (colours[labels][:, :, None, None] + noise).clamp(0, 255).to(torch.uint8)
    words = torch.randn(4, 24)  # the text feature of each colour word
    text_feats = words[labels] + 0.05 * torch.randn(16, 24)
    encoder = ImageEncoder(backbone="resnet18")
    stats = pretrain_image_encoder(encoder, images, text_feats, epochs=8, lr=2e-3, batch_size=8, temperature=0.1,
                                   contrast_dim=16, seed=0, device="cpu")
    losses = stats["losses"]
    assert len(losses) == 8 and np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    assert losses[-1] < 0.6 * math.log(8), losses  # well below chance: images now find their colour's text
    assert stats["images_per_s"] > 0 and stats["temperature"] > 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    config, dataset = build_tiny_dataset(root, **TINY)
    return config, dataset, load_modality_inputs(config, dataset), root


def _config(tiny, cache, **extra):
    config, _, _, _ = tiny
    return {"data_path": config["data_path"], "dataset": "tiny", "pretrain_seed": 2020, "feature_cache_dir": str(cache),
            **TINY, **extra}


def test_cached_features_are_aligned_and_reused(tiny, tmp_path, caplog):
    _, dataset, inputs, _ = tiny
    config = _config(tiny, tmp_path)
    with caplog.at_level(logging.WARNING):
        first = cached_features(config, inputs)
    assert f"{BROKEN_IMAGE}.jpg cannot be read" in caplog.text
    assert set(first.stats["computed"]) == {"text_encoder", "item_text", "user_text", "image_encoder", "item_image"}
    assert first.stats["text_pretrain_s"] > 0 and first.stats["image_pretrain_images_per_s"] > 0
    items, users = inputs.item_ids, inputs.user_ids
    assert first.item_text.shape == (N_ITEMS + 1, 32) and first.item_image.shape == (N_ITEMS + 1, 512)
    assert first.user_text.shape == (N_USERS + 1, 32)
    for index, raw in enumerate(items):
        assert bool(first.item_text_mask[index]) == (raw not in ("[PAD]", NO_TEXT))
        assert bool(first.item_image_mask[index]) == (raw not in ("[PAD]", NO_IMAGE, BROKEN_IMAGE))
        assert first.item_image[index].any() == first.item_image_mask[index]
    assert [bool(m) for m in first.user_text_mask] == [raw not in ("[PAD]", "u0") for raw in users]
    files = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert sum(name.startswith("tokenizer-") for name in files) == 1 and len(files) == 9

    second = cached_features(config, inputs)
    assert second.stats["computed"] == [] and "text_pretrain_s" not in second.stats
    assert set(second.stats["reused"]) == {"item_text", "user_text", "item_image"}
    for name in ("item_text", "item_text_mask", "user_text", "user_text_mask", "item_image", "item_image_mask"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == files

    # encoder_init hands back the same trained encoders: encoding an item's text again gives its cached row
    tokenizer, text, image = encoder_init(config, inputs)
    row = items.index("i4")
    ids, mask = tokenize(tokenizer, [item_words("i4")], max_length=32)
    assert torch.allclose(text.encode(ids, mask)[0], first.item_text[row], atol=1e-5)
    saved = torch.load(next(tmp_path.glob("image_encoder-*.pt")), weights_only=True)
    assert saved.keys() == image.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in image.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # nothing retrained or rewritten


def test_cache_keys_and_corruption(tiny, tmp_path, caplog):
    _, _, inputs, _ = tiny
    config = _config(tiny, tmp_path, modalities=["image"], pretrain_encoders=False)
    first = cached_features(config, inputs)
    assert first.item_text is None and first.user_text is None and first.item_image is not None
    assert "image_pretrain_s" not in first.stats and first.stats["computed"] == ["image_encoder", "item_image"]

    npy = next(tmp_path.glob("item_image-*.npy"))
    data = bytearray(npy.read_bytes())
    data[-5] ^= 0xFF
    npy.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        again = cached_features(config, inputs)
    assert "checksum differs" in caplog.text and again.stats["computed"] == ["item_image"]  # encoder file kept
    assert torch.equal(again.item_image, first.item_image)

    changed = cached_features({**config, "image_backbone": "resnet34", "modalities": ["text", "image"],
                               "user_text_source": "items", "text_dim": 16, "text_heads": 2}, inputs)
    assert "item_image" in changed.stats["computed"] and "item_text" in changed.stats["computed"]
    assert changed.item_text.shape == (N_ITEMS + 1, 16) and changed.user_text is None
    assert not torch.equal(changed.item_image, first.item_image)
    with pytest.raises(ValueError, match="user_text_source"):
        cached_features({**config, "user_text_source": "everything"}, inputs)


def test_a_dataset_without_images_masks_the_modality_and_trains_no_image_encoder(tiny, tmp_path, caplog):
    _, _, inputs, _ = tiny
    bare = dataclasses.replace(inputs, item_image_files=[None] * len(inputs.item_image_files))
    with caplog.at_level(logging.WARNING):
        features = cached_features(_config(tiny, tmp_path), bare)
    assert "no item has a readable image" in caplog.text
    assert features.item_image.shape == (N_ITEMS + 1, 512) and not features.item_image.any()
    assert not features.item_image_mask.any()
    assert "image_encoder" not in features.stats["computed"] and not list(tmp_path.glob("image_encoder-*"))
