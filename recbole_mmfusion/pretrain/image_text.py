"""Image-encoder pretraining by image-text contrast (CLIP-style symmetric InfoNCE), from scratch.

Why this method: every item with an image also has a text (titles exist for nearly all Amazon items), so the
pairs come for free; no labels are needed (the 2023 categories are sparse and coarse, a poor classification
target); and pulling each image towards its own item's text embedding lets the image features carry the
semantics the masked-LM text encoder learned, which is what a cold item (no interactions yet) needs.

Setup: image side = :class:`~recbole_mmfusion.encoders.image.ImageEncoder` + ``Linear(out_dim, contrast_dim)``;
text side = ``Linear(text_dim, contrast_dim)`` over the **frozen** item text features of the pre-trained text
encoder. Both sides are L2-normalised; the logits are their cosine similarities times a **learnable** scale
``1 / temperature``, initialised at ``1 / temperature`` and capped at 100 (as in CLIP). Random resized crops and
horizontal flips keep a small catalogue from being memorised. Only the image encoder is kept; both projection
heads are thrown away.
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2
from transformers import get_linear_schedule_with_warmup

from recbole_mmfusion.encoders.image import to_float_images
from recbole_mmfusion.pretrain import seeded

logger = logging.getLogger(__name__)

MAX_LOGIT_SCALE = 100.0
WARMUP_RATIO = 0.1
WEIGHT_DECAY = 1e-4
MIN_CROP_SCALE = 0.5   # a crop keeps at least half of the image: product photos are centred, small crops lose them


class ContrastHeads(nn.Module):
    r"""The two projection heads and the learnable temperature of image-text contrast.

    Args:
        image_dim (int): image encoder output size.
        text_dim (int): text feature size.
        contrast_dim (int): shared embedding size (default: ``128``).
        temperature (float): initial softmax temperature (default: ``0.07``).

    Shapes:
        - input: image features :math:`(B, image\_dim)`, text features :math:`(B, text\_dim)`
        - output: logits :math:`(B, B)`, row ``i`` = image ``i`` against every text of the batch
    """

    def __init__(self, image_dim: int, text_dim: int, contrast_dim: int = 128, temperature: float = 0.07):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"contrast_temperature must be > 0, not {temperature}")
        self.temperature = temperature
        self.image_proj = nn.Linear(image_dim, contrast_dim)
        self.text_proj = nn.Linear(text_dim, contrast_dim)
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self):
        self.image_proj.reset_parameters()
        self.text_proj.reset_parameters()
        with torch.no_grad():
            self.logit_scale.fill_(math.log(1.0 / self.temperature))

    def forward(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        img = F.normalize(self.image_proj(image_feats), dim=-1)  # (B, contrast_dim)
        txt = F.normalize(self.text_proj(text_feats), dim=-1)    # (B, contrast_dim)
        scale = self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
        return scale * img @ txt.t()                              # (B, B)


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: each image must pick its own text among the batch's, and each text its own image."""
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def _augment(images: torch.Tensor, transform) -> torch.Tensor:
    # one draw per image: v2 applied to a batch tensor would crop every image of the batch the same way
    return torch.stack([transform(image) for image in images])


def pretrain_image_encoder(encoder, images: torch.Tensor, text_feats: torch.Tensor, *, epochs: int, lr: float,
                           batch_size: int, temperature: float = 0.07, contrast_dim: int = 128, seed: int = 0,
                           device="cpu", progress: bool = False) -> dict:
    """Train ``encoder`` in place so that each image lands near its item's text.

    Args:
        encoder: an :class:`~recbole_mmfusion.encoders.image.ImageEncoder`, trained in place.
        images: uint8 :math:`(N, 3, S, S)`, the items that have both an image and a text.
        text_feats: :math:`(N, d)` float, the same items' text features (kept frozen).
        epochs, lr, batch_size: passes, peak learning rate (linear warmup then decay), pairs per step;
            a batch needs at least 2 pairs (a last batch of 1 is dropped).
        temperature: initial temperature of the learnable logit scale.
        contrast_dim: size of the shared embedding.
        seed: seeds the shuffling, the crops and the heads, so a run repeats exactly within a process.
        device: where to train; the encoder is left on the device it came from.

    Returns:
        ``{"losses": mean loss per epoch, "images": N, "steps", "seconds", "images_per_s", "temperature"}``.
    """
    if len(images) != len(text_feats):
        raise ValueError(f"{len(images)} images but {len(text_feats)} text features")
    stats = {"losses": [], "images": len(images), "steps": 0, "seconds": 0.0, "images_per_s": 0.0,
             "temperature": temperature}
    if len(images) < 2 or epochs <= 0:
        logger.warning("image-text pretraining skipped: %s", "0 epochs" if epochs <= 0 else
                       f"{len(images)} item(s) with both an image and a text (2 needed)")
        return stats
    home = encoder.mean.device
    device = torch.device(device)
    size = images.shape[-1]
    text_feats = text_feats.detach().float()
    # standardised per dimension: a masked-LM encoder's vectors share a large common component, which would
    # otherwise leave the text side of the contrast nearly constant across items
    text_feats = (text_feats - text_feats.mean(dim=0)) / text_feats.std(dim=0).clamp(min=1e-6)
    batch_size = max(2, min(batch_size, len(images)))
    with seeded(seed, device):
        heads = ContrastHeads(encoder.out_dim, text_feats.shape[1], contrast_dim, temperature).to(device)
        encoder.to(device).train()
        transform = v2.Compose([v2.RandomResizedCrop(size, scale=(MIN_CROP_SCALE, 1.0), antialias=True),
                                v2.RandomHorizontalFlip()])
        params = list(encoder.parameters()) + list(heads.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY)
        steps_per_epoch = len(images) // batch_size
        total = epochs * steps_per_epoch
        scheduler = get_linear_schedule_with_warmup(optimizer, max(1, int(WARMUP_RATIO * total)), total)
        order_rng = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        for epoch in range(epochs):
            order = torch.randperm(len(images), generator=order_rng)
            batches = range(0, steps_per_epoch * batch_size, batch_size)
            if progress:
                from tqdm.auto import tqdm
                batches = tqdm(batches, desc=f"image-text epoch {epoch + 1}/{epochs}", leave=False)
            loss_sum = 0.0
            for begin in batches:
                index = order[begin:begin + batch_size]
                batch = to_float_images(_augment(images[index], transform).to(device))
                logits = heads(encoder(batch), text_feats[index].to(device))
                loss = contrastive_loss(logits)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach())
                stats["steps"] += 1
            stats["losses"].append(loss_sum / max(steps_per_epoch, 1))
            logger.info("image-text epoch %d/%d: loss %.4f", epoch + 1, epochs, stats["losses"][-1])
        seconds = time.perf_counter() - start
    encoder.to(home)
    stats["seconds"] = seconds
    stats["images_per_s"] = stats["steps"] * batch_size / max(seconds, 1e-9)
    stats["temperature"] = float(1.0 / heads.logit_scale.detach().clamp(max=math.log(MAX_LOGIT_SCALE)).exp())
    logger.info("image-text pretraining: %d images x %d epochs in %.1f s (%.1f images/s), final temperature %.4f",
                len(images), epochs, seconds, stats["images_per_s"], stats["temperature"])
    return stats
