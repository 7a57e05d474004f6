"""The cached feature pipeline: tokenizer -> text encoder (masked-LM) -> text features -> image encoder
(image-text contrast) -> image features, each step stored under a key that hashes everything shaping it.

Files in the cache folder (``feature_cache_dir``, default ``<data_path>/mmfusion``), ``<key>`` a hex digest:

- ``tokenizer-<key>.json``: the WordPiece tokenizer (key: the text sidecars, id order, vocabulary size);
- ``text_encoder-<key>.pt`` / ``image_encoder-<key>.pt``: encoder state dicts (``torch.load(weights_only=True)``);
- ``item_text-<key>.npy``, ``user_text-<key>.npy``, ``item_image-<key>.npy``: float32 features, row = internal
  id, each with ``<name>-<key>.json``: shape, dtype, sha256 of the ``.npy`` bytes, producer, key inputs, the raw
  ids of the rows and the rows without a feature. A file whose manifest disagrees is recomputed, with a warning.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from recbole_mmfusion.encoders.image import BACKBONES, ImageEncoder
from recbole_mmfusion.encoders.text import TextEncoder
from recbole_mmfusion.modalities import (FeatureFileError, MissingSidecarError, ModalityInputs, config_modalities,
                                         config_value)
from recbole_mmfusion.pretrain import (cache_key, load_state_dict_file, read_verified_npy, seeded,
                                       torch_save_atomic, write_npy_with_manifest)
from recbole_mmfusion.pretrain.image_text import pretrain_image_encoder
from recbole_mmfusion.pretrain.text_mlm import pretrain_text_encoder
from recbole_mmfusion.pretrain.tokenizer import train_or_load_tokenizer

logger = logging.getLogger(__name__)

TEXT_KEYS = ("text_vocab_size", "text_dim", "text_layers", "text_heads", "text_hidden_dim", "text_max_length",
             "text_dropout", "pretrain_encoders", "pretrain_batch_size", "text_pretrain_epochs", "text_pretrain_lr",
             "mlm_probability", "text_pooling", "pretrain_seed")
IMAGE_KEYS = ("image_backbone", "image_input_size", "pretrain_encoders", "pretrain_batch_size",
              "image_pretrain_epochs", "image_pretrain_lr", "contrast_dim", "contrast_temperature", "pretrain_seed")
OTHER_KEYS = ("user_text_source", "encode_batch_size")
USER_TEXT_SOURCES = ("auto", "reviews", "items")


def load_images(files: list[Optional[Path]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 ``[n, 3, size, size]`` (RGB, resized to a square) and a mask of the rows that hold one.

    ``None`` entries and files Pillow cannot read are masked out; each unreadable file is logged by name.
    """
    from PIL import Image

    images = torch.zeros(len(files), 3, size, size, dtype=torch.uint8)
    mask = torch.zeros(len(files), dtype=torch.bool)
    failed = 0
    for row, path in enumerate(files):
        if path is None:
            continue
        try:
            with Image.open(path) as image:
                image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when it is much larger
                pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            failed += 1
            logger.warning("image %s cannot be read (%s); its item is treated as without image", path, exc)
            continue
        images[row] = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
        mask[row] = True
    if failed:
        logger.warning("%d of %d image files could not be read", failed, sum(p is not None for p in files))
    return images, mask


@dataclass
class FeatureSet:
    """Cached encoder features, row = internal id; ``None`` where a modality is off (or left to the model).

    Shapes:
        - ``item_text`` :math:`(n\\_items, D_t)` float32, ``item_text_mask`` :math:`(n\\_items)` bool
        - ``user_text`` :math:`(n\\_users, D_t)`, ``user_text_mask`` :math:`(n\\_users)`
        - ``item_image`` :math:`(n\\_items, D_i)`, ``item_image_mask`` :math:`(n\\_items)`
    """

    item_text: Optional[torch.Tensor] = None
    item_text_mask: Optional[torch.Tensor] = None
    user_text: Optional[torch.Tensor] = None
    user_text_mask: Optional[torch.Tensor] = None
    item_image: Optional[torch.Tensor] = None
    item_image_mask: Optional[torch.Tensor] = None
    stats: dict = field(default_factory=dict)  # seconds and throughput of each stage run; "computed" / "reused"
    #: what a model file needs to find these features again: ``{"keys": {stage: key}, "sha256": {name: digest}}``
    reference: dict = field(default_factory=dict)


#: set while a saved model is rebuilt: the cache files it was trained with, which must be read, never recomputed
_pinned: ContextVar = ContextVar("pinned_feature_cache", default=None)


@contextmanager
def pinned_cache(reference: dict):
    """Within this block the cached pipeline reads exactly the files named by ``reference`` (a
    :attr:`FeatureSet.reference`); a missing one is a :class:`MissingSidecarError` and a changed one a
    :class:`FeatureFileError`, where outside the block they would be trained and encoded again (which on CPU
    is neither quick nor bit-identical)."""
    token = _pinned.set(reference)
    try:
        yield
    finally:
        _pinned.reset(token)


def _settings(config) -> dict:
    settings = {}
    for key in dict.fromkeys(TEXT_KEYS + IMAGE_KEYS + OTHER_KEYS):
        value = config_value(config, key)
        if value is None:
            raise ValueError(f"config key {key!r} is not set (its default lives in properties/model/MMFusion.yaml)")
        settings[key] = value
    if settings["user_text_source"] not in USER_TEXT_SOURCES:
        raise ValueError(f"user_text_source must be one of {USER_TEXT_SOURCES}, not {settings['user_text_source']!r}")
    return settings


class _Pipeline:
    """One run of the cached pipeline; each stage is computed at most once, and only when asked for."""

    def __init__(self, config, inputs: ModalityInputs, device):
        self.s, self.inputs, self.device = _settings(config), inputs, torch.device(device)
        self.modalities = config_modalities(config)
        self.cache_dir = Path(config_value(config, "feature_cache_dir") or Path(config["data_path"]) / "mmfusion")
        self.pretrain = bool(self.s["pretrain_encoders"])
        text = {k: self.s[k] for k in TEXT_KEYS}
        self.key_inputs = {"tokenizer": {"source": inputs.digests.get("text", ""), "vocab": self.s["text_vocab_size"]}}
        self.keys = {"tokenizer": cache_key({"stage": "tokenizer", **self.key_inputs["tokenizer"]})}
        self.key_inputs["text"] = {"tokenizer": self.keys["tokenizer"], **text}
        self.keys["text"] = cache_key({"stage": "text", **self.key_inputs["text"]})
        self.key_inputs["image"] = {"source": inputs.digests.get("image", ""), **{k: self.s[k] for k in IMAGE_KEYS},
                                    "text": self.keys["text"] if self.pretrain else None}
        self.keys["image"] = cache_key({"stage": "image", **self.key_inputs["image"]})
        self.pinned = _pinned.get()
        if self.pinned is not None:
            # the saved keys, not the recomputed ones: those hash file times, which a copy of the data changes
            self.keys.update(self.pinned.get("keys", {}))
        self.stats: dict = {"computed": [], "reused": []}
        self.used: dict = {}
        self._tokenizer = self._text_encoder = self._image_encoder = None
        self._arrays: dict = {}

    def _pinned_missing(self, path: Path, what: str) -> MissingSidecarError:
        return MissingSidecarError(
            f"{path} not found or unreadable: the model was trained with this {what} (from the feature cache "
            f"{self.cache_dir}); copy the cache folder along with the model file, or train the model again")

    def _timed(self, name: str, seconds: float, count: int, unit: str) -> None:
        self.stats[f"{name}_s"] = seconds
        self.stats[f"{name}_{unit}_per_s"] = count / max(seconds, 1e-9)
        logger.info("%s: %.2f s (%d %s, %.1f %s/s)", name, seconds, count, unit, count / max(seconds, 1e-9), unit)

    # ---------------------------------------------------------------------------------------------- text
    def tokenizer(self):
        if self._tokenizer is None:
            start = time.perf_counter()
            if self.pinned is not None:
                path = self.cache_dir / f"tokenizer-{self.keys['tokenizer']}.json"
                if not path.is_file():
                    raise self._pinned_missing(path, "tokenizer")
            texts = [t for t in self.inputs.item_text + self.inputs.user_text if t]
            self._tokenizer = train_or_load_tokenizer(texts, int(self.s["text_vocab_size"]), self.cache_dir,
                                                      self.keys["tokenizer"])
            self.stats["tokenizer_s"] = time.perf_counter() - start
        return self._tokenizer

    def text_encoder(self) -> TextEncoder:
        if self._text_encoder is None:
            s, tokenizer = self.s, self.tokenizer()
            with seeded(s["pretrain_seed"]):
                encoder = TextEncoder(vocab_size=len(tokenizer), dim=s["text_dim"], n_layers=s["text_layers"],
                                      n_heads=s["text_heads"], hidden_dim=s["text_hidden_dim"],
                                      max_length=s["text_max_length"], dropout=s["text_dropout"],
                                      pad_token_id=tokenizer.pad_token_id, pooling=s["text_pooling"])
            path = self.cache_dir / f"text_encoder-{self.keys['text']}.pt"
            if not load_state_dict_file(path, encoder):
                if self.pinned is not None:
                    raise self._pinned_missing(path, "text encoder")
                if self.pretrain:
                    corpus = [t for t in self.inputs.item_text + self.inputs.user_text if t]
                    run = pretrain_text_encoder(
                        encoder, tokenizer, corpus, epochs=s["text_pretrain_epochs"], lr=s["text_pretrain_lr"],
                        batch_size=s["pretrain_batch_size"], mlm_probability=s["mlm_probability"],
                        max_length=s["text_max_length"], seed=s["pretrain_seed"], device=self.device)
                    self.stats.update(text_pretrain_s=run["seconds"], text_pretrain_losses=run["losses"],
                                      text_pretrain_sequences_per_s=run["sequences_per_s"])
                torch_save_atomic(path, encoder.state_dict())
                self.stats["computed"].append("text_encoder")
            self._text_encoder = encoder.to(self.device)
        return self._text_encoder

    def _encode_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Rows of non-empty texts encoded ([CLS]), shortest first so each batch pads little."""
        encoder, tokenizer = self.text_encoder(), self.tokenizer()
        rows = [i for i, t in enumerate(texts) if t]
        out, mask = np.zeros((len(texts), encoder.out_dim), dtype=np.float32), np.zeros(len(texts), dtype=bool)
        if not rows:
            return out, mask
        ids = tokenizer([texts[i] for i in rows], truncation=True, max_length=self.s["text_max_length"])["input_ids"]
        order = sorted(range(len(ids)), key=lambda k: len(ids[k]))
        step = int(self.s["encode_batch_size"])
        for begin in range(0, len(order), step):
            chunk = order[begin:begin + step]
            width = max(len(ids[k]) for k in chunk)
            batch = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            for j, k in enumerate(chunk):
                batch[j, :len(ids[k])] = torch.tensor(ids[k])
            feats = encoder.encode(batch, (batch != tokenizer.pad_token_id).long(), batch_size=len(chunk))
            out[[rows[k] for k in chunk]] = feats.cpu().numpy()
        mask[rows] = True
        return out, mask

    def text_features(self, names: tuple[str, ...]) -> dict:
        """``{name: (array, mask)}`` for ``item_text`` / ``user_text``, from the cache or encoded now."""
        texts = {"item_text": (self.inputs.item_text, self.inputs.item_ids),
                 "user_text": (self.inputs.user_text, self.inputs.user_ids)}
        for name in names:
            if name not in self._arrays and not self._reuse(name, "text", texts[name][1]):
                self.text_encoder()  # trained first, so that the timing below is the encoding alone
                start = time.perf_counter()
                array, mask = self._encode_texts(texts[name][0])
                self._timed(f"{name}_encode", time.perf_counter() - start, int(mask.sum()), "sequences")
                self._store(name, "text", texts[name][1], array, mask,
                            "TextEncoder [CLS] (" + ("masked-LM pretrained" if self.pretrain else "random init") + ")")
        return {name: self._arrays[name] for name in names}

    # --------------------------------------------------------------------------------------------- image
    def image_encoder(self, images=None, image_mask=None) -> ImageEncoder:
        if self._image_encoder is None:
            s = self.s
            with seeded(s["pretrain_seed"]):
                encoder = ImageEncoder(backbone=s["image_backbone"])
            path = self.cache_dir / f"image_encoder-{self.keys['image']}.pt"
            if not load_state_dict_file(path, encoder):
                if self.pretrain and not any(self.inputs.item_text):
                    logger.warning("image-text pretraining needs item texts ('text' in modalities); the image "
                                   "encoder keeps its random initialisation")
                elif self.pretrain:
                    if images is None:
                        images, image_mask = self._load_images()
                    text, text_mask = self.text_features(("item_text",))["item_text"]
                    pairs = image_mask & torch.from_numpy(text_mask)
                    run = pretrain_image_encoder(
                        encoder, images[pairs], torch.from_numpy(text[pairs.numpy()]),
                        epochs=s["image_pretrain_epochs"], lr=s["image_pretrain_lr"],
                        batch_size=s["pretrain_batch_size"], temperature=s["contrast_temperature"],
                        contrast_dim=s["contrast_dim"], seed=s["pretrain_seed"], device=self.device)
                    self.stats.update(image_pretrain_s=run["seconds"], image_pretrain_losses=run["losses"],
                                      image_pretrain_images_per_s=run["images_per_s"])
                torch_save_atomic(path, encoder.state_dict())
                self.stats["computed"].append("image_encoder")
            self._image_encoder = encoder.to(self.device)
        return self._image_encoder

    def _load_images(self):
        start = time.perf_counter()
        images, mask = load_images(self.inputs.item_image_files, int(self.s["image_input_size"]))
        self._timed("image_load", time.perf_counter() - start, int(mask.sum()), "images")
        return images, mask

    def image_features(self) -> tuple[np.ndarray, np.ndarray]:
        if "item_image" not in self._arrays and not self._reuse("item_image", "image", self.inputs.item_ids):
            images, mask = self._load_images()
            if not mask.any():  # nothing to encode: no encoder is built, trained or saved
                logger.warning("no item has a readable image: the image modality is masked for every item")
                array = np.zeros((len(images), BACKBONES[self.s["image_backbone"]]), dtype=np.float32)
                self._arrays["item_image"] = (array, mask.numpy())
                return self._arrays["item_image"]
            encoder = self.image_encoder(images, mask)
            start = time.perf_counter()
            array = np.zeros((len(images), encoder.out_dim), dtype=np.float32)
            rows = mask.nonzero().flatten()
            array[rows.numpy()] = encoder.encode(images[rows], int(self.s["encode_batch_size"])).cpu().numpy()
            self._timed("item_image_encode", time.perf_counter() - start, len(rows), "images")
            self._store("item_image", "image", self.inputs.item_ids, array, mask.numpy(),
                        "ImageEncoder pooled (" + ("image-text pretrained" if self.pretrain else "random init") + ")")
        return self._arrays["item_image"]

    # --------------------------------------------------------------------------------------------- cache
    def _paths(self, name: str, stage: str):
        stem = self.cache_dir / f"{name}-{self.keys[stage]}"
        return stem.with_suffix(".npy"), stem.with_suffix(".json")

    def _reuse(self, name: str, stage: str, ids: list[str]) -> bool:
        found = read_verified_npy(*self._paths(name, stage), key=self.keys[stage], ids=ids)
        expected = (self.pinned or {}).get("sha256", {}).get(name)
        if expected is not None:  # a file the saved model was trained with
            if found is None:
                raise self._pinned_missing(self._paths(name, stage)[0], f"{name} feature file")
            if found[1].get("sha256") != expected:
                raise FeatureFileError(f"{self._paths(name, stage)[0]} is not the file the model was trained with "
                                 f"(sha256 {found[1].get('sha256')}, expected {expected})")
        if found is None:
            return False
        array, manifest = found
        self.used[name] = manifest.get("sha256")
        mask = np.ones(len(array), dtype=bool)
        mask[np.asarray(manifest.get("missing_rows", []), dtype=np.int64)] = False
        self._arrays[name] = (array, mask)
        self.stats["reused"].append(name)
        return True

    def _store(self, name: str, stage: str, ids: list[str], array: np.ndarray, mask: np.ndarray, producer: str):
        manifest = write_npy_with_manifest(*self._paths(name, stage), array, key=self.keys[stage], name=name,
                                           producer=f"recbole_mmfusion.pretrain.features: {producer}",
                                           key_inputs=self.key_inputs[stage], ids=list(ids),
                                           missing_rows=np.flatnonzero(~mask).tolist())
        self.used[name] = manifest["sha256"]
        self._arrays[name] = (array, mask)
        self.stats["computed"].append(name)


def _tensors(pair):
    return torch.from_numpy(pair[0]), torch.from_numpy(pair[1])


def cached_features(config, inputs: ModalityInputs, device="cpu") -> FeatureSet:
    """The features of ``config['modalities']`` ("text": items and users, "image": items), cached on disk.

    ``user_text_source: items`` leaves ``user_text`` to the model (mean item text over the history); ``reviews``
    and ``auto`` encode each user's review text where there is one (mask ``False`` elsewhere, the model decides
    what fills those rows). ``stats`` holds the seconds and throughput of every stage that ran, the pretraining
    losses, and which files were ``computed`` or ``reused``.
    """
    run = _Pipeline(config, inputs, device)
    out = FeatureSet(stats=run.stats)
    if "text" in run.modalities:
        names = ("item_text",) + (("user_text",) if run.s["user_text_source"] != "items" else ())
        found = run.text_features(names)
        out.item_text, out.item_text_mask = _tensors(found["item_text"])
        if "user_text" in found:
            out.user_text, out.user_text_mask = _tensors(found["user_text"])
    if "image" in run.modalities:
        out.item_image, out.item_image_mask = _tensors(run.image_features())
    out.reference = {"keys": dict(run.keys), "sha256": dict(run.used)}
    logger.info("features in %s: computed %s, reused %s", run.cache_dir, run.stats["computed"] or "nothing",
                run.stats["reused"] or "nothing")
    return out


def pipeline_keys(config, inputs: ModalityInputs) -> dict:
    """The cache keys of each stage (tokenizer, text, image) for this config and these sidecars."""
    return dict(_Pipeline(config, inputs, "cpu").keys)


def review_encoder(config, inputs: ModalityInputs, device="cpu"):
    """A function ``texts -> (features [n, D_t], mask [n])`` encoding user documents the way the cached
    ``user_text`` features were encoded (same tokenizer, text encoder and batching). The encoder is loaded on
    the first call; under :func:`pinned_cache` (as when it is made) it must be the saved one."""
    pinned = _pinned.get()
    state = {}

    def encode(texts: list[str]):
        if "run" not in state:
            token = _pinned.set(pinned)
            try:
                state["run"] = _Pipeline(config, inputs, device)
                state["run"].text_encoder().eval()
            finally:
                _pinned.reset(token)
        with torch.no_grad():
            array, mask = state["run"]._encode_texts(list(texts))
        return torch.from_numpy(array), torch.from_numpy(mask)

    return encode


def encoder_init(config, inputs: ModalityInputs, device="cpu"):
    """``(tokenizer, text encoder, image encoder)`` for training end to end; ``None`` for a modality that is off.

    With ``pretrain_encoders`` the encoders start from the pretrained files of the cached pipeline (pretraining
    them first when the files are missing); otherwise from their seeded random initialisation.
    """
    run = _Pipeline(config, inputs, device)
    tokenizer = text = image = None
    if "text" in run.modalities:
        tokenizer, text = run.tokenizer(), run.text_encoder()
    if "image" in run.modalities:
        image = run.image_encoder()
    return tokenizer, text, image
