r"""Attention fusion of per-modality vectors into one vector, robust to missing modalities."""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn


class ModalityFusion(nn.Module):
    r"""Projects each modality to a common size and averages the projections with learnt attention.

    .. math::
        \mathbf{h}_m = \mathbf{P}_m \,\mathrm{LN}_m(\mathbf{x}_m) + \mathbf{c}_m, \qquad
        \alpha_m = \mathrm{softmax}_{m \in \mathcal{A}}\big(\mathbf{w}^\top
        \tanh(\mathbf{W} \mathbf{h}_m + \mathbf{b})\big), \qquad
        \mathbf{z} = \sum_{m \in \mathcal{A}} \alpha_m \mathbf{h}_m,

    where :math:`\mathrm{LN}_m` is a layer norm of the input (encoder outputs differ in scale by orders of
    magnitude between modalities and between a pretrained and a random encoder; normalising them keeps the
    attention and the first BPR steps from being dominated by the largest one) and :math:`\mathcal{A}` is the set of modalities present for the row. :math:`\mathbf{W}, \mathbf{b},
    \mathbf{w}` are shared across modalities. An absent modality has :math:`\alpha_m = 0` exactly and the
    others renormalise; its input is never read, so it may hold anything, NaN included. A row with no modality
    present gets :math:`\mathbf{z} = \mathbf{0}` and :math:`\alpha = \mathbf{0}`, with finite gradients.

    Args:
        in_dims (dict): modality name -> input size, in the order of the columns of ``alpha``.
        dim (int): size of the projections and of the fused vector (default: ``128``).
        attention_dim (int): hidden size of the attention scorer (default: ``128``).

    Shapes:
        - input: ``features[m]`` :math:`(B, d_m)`; ``masks[m]`` :math:`(B)` bool, ``True`` where ``m`` is present
        - output: fused :math:`(B, \text{dim})`, ``alpha`` :math:`(B, M)` in the order of ``in_dims``
    """

    def __init__(self, in_dims: Mapping[str, int], *, dim: int = 128, attention_dim: int = 128):
        super().__init__()
        if not in_dims:
            raise ValueError("ModalityFusion needs at least one modality")
        bad = {name: d for name, d in in_dims.items() if int(d) < 1}
        if bad:
            raise ValueError(f"modality input sizes must be at least 1, got {bad}")
        if dim < 1 or attention_dim < 1:
            raise ValueError(f"dim and attention_dim must be at least 1, got {dim} and {attention_dim}")
        self.in_dims = {str(name): int(d) for name, d in in_dims.items()}
        self.dim = dim
        self.attention_dim = attention_dim

        self.input_norms = nn.ModuleDict({name: nn.LayerNorm(d) for name, d in self.in_dims.items()})
        self.projections = nn.ModuleDict({name: nn.Linear(d, dim) for name, d in self.in_dims.items()})
        self.attention = nn.Linear(dim, attention_dim)
        self.attention_vector = nn.Linear(attention_dim, 1, bias=False)

        self.reset_parameters()

    @property
    def modalities(self) -> Tuple[str, ...]:
        """Modality names in the order of ``alpha``'s columns."""
        return tuple(self.in_dims)

    def reset_parameters(self):
        for norm, projection in zip(self.input_norms.values(), self.projections.values()):
            norm.reset_parameters()
            projection.reset_parameters()
        self.attention.reset_parameters()
        self.attention_vector.reset_parameters()

    def project(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Modality ``name``'s projection :math:`\\mathbf{h}_m`: ``[B, d_m] -> [B, dim]``."""
        return self.projections[name](self.input_norms[name](x))

    def forward(self, features: Mapping[str, torch.Tensor],
                masks: Optional[Mapping[str, torch.Tensor]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        missing = [name for name in self.in_dims if name not in features]
        if missing:
            raise KeyError(f"no features for modalities {missing} (expected {list(self.in_dims)})")
        masks = masks or {}
        projected, present = [], []
        for name in self.in_dims:
            x = features[name]
            mask = masks.get(name)
            mask = (torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if mask is None
                    else mask.to(device=x.device, dtype=torch.bool))
            # where, not a product: an absent row may hold NaN/inf, and NaN * 0 is NaN (in values and in
            # the weight gradient of the projection), so it is replaced before it reaches any arithmetic
            x = torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
            projected.append(self.project(name, x))
            present.append(mask)
        h = torch.stack(projected, dim=1)  # (B, M, dim)
        present = torch.stack(present, dim=1)  # (B, M)

        scores = self.attention_vector(torch.tanh(self.attention(h))).squeeze(-1)  # (B, M)
        scores = scores.masked_fill(~present, float("-inf"))
        # a row with nothing present would be softmax(-inf, ..., -inf) = NaN: give it finite scores, then zero
        # its weights below
        any_present = present.any(dim=1, keepdim=True)  # (B, 1)
        scores = torch.where(any_present, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
        alpha = torch.softmax(scores, dim=1)
        alpha = torch.where(present, alpha, torch.zeros((), dtype=alpha.dtype, device=alpha.device))
        fused = torch.einsum("bm,bmd->bd", alpha, h)  # (B, dim)
        return fused, alpha

    def extra_repr(self) -> str:
        return f"in_dims={self.in_dims}, dim={self.dim}, attention_dim={self.attention_dim}"
