"""Image encoder: torchvision's ResNet-50 with no pretrained weights, globally average-pooled."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models

#: backbones and their pooled feature sizes; the seed uses resnet50, smaller ones help quick experiments on a CPU
BACKBONES = {"resnet50": 2048, "resnet18": 512, "resnet34": 512, "resnet101": 2048}


class ImageEncoder(nn.Module):
    r"""A ResNet trained from scratch whose global-average-pooled activations encode an image.

    Inputs are RGB in [0, 1]; they are standardised inside the encoder (per-channel mean and standard
    deviation of 0.5 and 0.25: no dataset statistics are borrowed), so any square size works.

    Args:
        backbone (str): a torchvision ResNet builder name, see :data:`BACKBONES` (default: ``"resnet50"``).
        zero_init_residual (bool): start each residual branch's last BatchNorm at zero, so every block
            begins as an identity; this helps a from-scratch network train (default: ``True``).

    Shapes:
        - input: :math:`(B, 3, H, W)` float in [0, 1]
        - output: :math:`(B, 2048)` for ResNet-50 (:attr:`out_dim`)
    """

    def __init__(self, *, backbone: str = "resnet50", zero_init_residual: bool = True):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"image_backbone must be one of {sorted(BACKBONES)}, not {backbone!r}")
        self.backbone_name = backbone
        self.zero_init_residual = zero_init_residual
        self.net = getattr(models, backbone)(weights=None, zero_init_residual=zero_init_residual)
        self.net.fc = nn.Identity()
        self.out_dim = BACKBONES[backbone]
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5), persistent=False)
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25), persistent=False)

    def reset_parameters(self):
        fresh = getattr(models, self.backbone_name)(weights=None, zero_init_residual=self.zero_init_residual)
        fresh.fc = nn.Identity()
        self.net.load_state_dict(fresh.state_dict())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)  # (B, out_dim)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """:meth:`forward` in eval mode over many images (uint8 ``[N, 3, H, W]`` or float in [0, 1])."""
        was_training = self.training
        self.eval()
        device = self.mean.device
        out = []
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size].to(device)
            out.append(self(to_float_images(chunk)))
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.out_dim, device=device)


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) to float in [0, 1]; float images pass through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images
