"""Training the encoders from scratch and caching what they produce.

Stages: a WordPiece tokenizer trained on the dataset's own text (:mod:`.tokenizer`), the text encoder pre-trained
by masked-LM (:mod:`.text_mlm`), the image encoder pre-trained by image-text contrast (:mod:`.image_text`), and
the cached pipeline that runs them and stores their features (:mod:`.features`). Every file written here is keyed
on a hash of its inputs and of the settings that shape it, and written atomically; the helpers below are shared
by the stages.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch

from recbole_mmfusion.fileio import replace_from_temp

logger = logging.getLogger(__name__)

#: bumped when a cached file's content or layout changes, so old caches are not reused
FORMAT_VERSION = 1


def cache_key(payload: dict) -> str:
    """A short hex key: sha256 over the JSON of ``payload`` (sorted keys) and :data:`FORMAT_VERSION`."""
    text = json.dumps({"format": FORMAT_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


@contextlib.contextmanager
def seeded(seed: int, device=None):
    """Run a block with torch's RNGs seeded to ``seed``, restoring the caller's RNG state afterwards."""
    device = torch.device(device or "cpu")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def save_npy_atomic(path, array: np.ndarray) -> str:
    """Write ``array`` as ``path`` (temp file in the same folder, then rename); returns the file's sha256."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    data = buffer.getvalue()
    replace_from_temp(path, lambda out: out.write(data))
    return hashlib.sha256(data).hexdigest()


def torch_save_atomic(path, state_dict: dict) -> None:
    """``torch.save`` of a state dict (tensors only, readable with ``weights_only=True``), atomically."""
    cpu = {k: v.detach().cpu() for k, v in state_dict.items()}
    replace_from_temp(path, lambda out: torch.save(cpu, out))


def load_state_dict_file(path, module: torch.nn.Module) -> bool:
    """Load a file written by :func:`torch_save_atomic` into ``module``; ``False`` (with a warning) if unusable."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # a torn, corrupted or mismatched file is rebuilt, not trusted
        logger.warning("%s cannot be loaded (%s: %s); training it again", path, type(exc).__name__, exc)
        return False
    return True


def read_verified_npy(path, manifest_path, *, key: str, ids: list[str]):
    """``(array, manifest)`` of a cached matrix whose manifest matches its bytes, key and id order; else ``None``.

    A missing pair is a plain miss; a pair that exists but disagrees is logged as a warning (and recomputed).
    """
    path, manifest_path = Path(path), Path(manifest_path)
    if not (path.is_file() and manifest_path.is_file()):
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        data = path.read_bytes()
        problem = None
        if manifest.get("key") != key or manifest.get("format") != FORMAT_VERSION:
            problem = "its key or format differs"
        elif hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            problem = "its checksum differs from the manifest (the file was changed or damaged)"
        elif manifest.get("ids") != list(ids):
            problem = "its id order differs from the dataset's"
        else:
            array = np.load(io.BytesIO(data), allow_pickle=False)
            if list(array.shape) != manifest.get("shape") or str(array.dtype) != manifest.get("dtype"):
                problem = f"its shape/dtype {array.shape}/{array.dtype} differ from the manifest"
    except (OSError, ValueError) as exc:
        problem = f"it cannot be read ({exc})"
    if problem:
        logger.warning("cached %s is not reused: %s; recomputing", path, problem)
        return None
    return array, manifest


def write_npy_with_manifest(path, manifest_path, array: np.ndarray, **manifest) -> dict:
    """Save ``array`` atomically, then its manifest (shape, dtype, sha256, ``format`` and the given entries)."""
    digest = save_npy_atomic(path, array)
    from recbole_mmfusion.fileio import write_json_atomic

    payload = {"format": FORMAT_VERSION, "file": Path(path).name, "shape": list(array.shape),
               "dtype": str(array.dtype), "sha256": digest, **manifest}
    write_json_atomic(manifest_path, payload)
    return payload


from recbole_mmfusion.pretrain.tokenizer import tokenize, train_or_load_tokenizer  # noqa: E402
from recbole_mmfusion.pretrain.text_mlm import pretrain_text_encoder  # noqa: E402
from recbole_mmfusion.pretrain.image_text import pretrain_image_encoder  # noqa: E402
from recbole_mmfusion.pretrain.features import FeatureSet, cached_features, encoder_init, load_images  # noqa: E402

__all__ = [
    "FORMAT_VERSION", "cache_key", "seeded", "save_npy_atomic", "torch_save_atomic", "load_state_dict_file",
    "read_verified_npy", "write_npy_with_manifest", "tokenize", "train_or_load_tokenizer",
    "pretrain_text_encoder", "pretrain_image_encoder", "FeatureSet", "cached_features", "encoder_init",
    "load_images",
]
