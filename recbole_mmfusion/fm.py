r"""Factorization machine over a user vector and an item vector, split so that all-item scoring is one matmul."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


class FactorizationMachine(nn.Module):
    r"""Second-order factorization machine scoring :math:`\mathbf{x} = [\mathbf{u}; \mathbf{i}]`:

    .. math::
        s(\mathbf{x}) = w_0 + \mathbf{w}^\top \mathbf{x}
        + \sum_{j < k} \langle \mathbf{v}_j, \mathbf{v}_k \rangle x_j x_k .

    With :math:`\mathbf{p} = \mathbf{V}_u^\top \mathbf{u}` and :math:`\mathbf{q} = \mathbf{V}_i^\top \mathbf{i}`
    the pairwise sum splits into a user part, an item part and one cross term:

    .. math::
        \tfrac12\big(\lVert\mathbf{p}\rVert^2 - \textstyle\sum_j \lVert\mathbf{v}_j\rVert^2 u_j^2\big)
        + \tfrac12\big(\lVert\mathbf{q}\rVert^2 - \textstyle\sum_k \lVert\mathbf{v}_k\rVert^2 i_k^2\big)
        + \mathbf{p}^\top \mathbf{q},

    so :math:`s = b_u + b_i + \mathbf{p}^\top\mathbf{q}` with per-user and per-item biases
    (:meth:`user_part`, :meth:`item_part`), and scoring every user against every item
    (:meth:`score_all`) costs one ``[U, k] x [k, I]`` product.

    Args:
        user_dim (int): size of the user vector (default: ``128``).
        item_dim (int): size of the item vector (default: ``128``).
        factors (int): size :math:`k` of each feature's latent vector :math:`\mathbf{v}_j` (default: ``64``).

    Shapes:
        - input: ``u`` :math:`(B, d_u)`, ``i`` :math:`(B, d_i)`
        - output: :meth:`forward` :math:`(B)`; :meth:`score_all` ``[U, d_u], [I, d_i] -> [U, I]``
    """

    def __init__(self, user_dim: int = 128, item_dim: int = 128, *, factors: int = 64):
        super().__init__()
        if user_dim < 1 or item_dim < 1 or factors < 1:
            raise ValueError(f"user_dim, item_dim and factors must be at least 1, got {user_dim}, {item_dim}, "
                             f"{factors}")
        self.user_dim = user_dim
        self.item_dim = item_dim
        self.factors = factors

        self.w0 = nn.Parameter(torch.zeros(()))
        self.linear = nn.Linear(user_dim + item_dim, 1, bias=False)  # w; columns [0, user_dim) act on u
        self.V = nn.Parameter(torch.empty(user_dim + item_dim, factors))  # row j is v_j

        self.reset_parameters()

    def reset_parameters(self):
        # V must start random: at V = 0 the pairwise term's gradient with respect to V is zero too, a saddle
        # it would never leave. w0 and w start at zero, which their gradients (1 and x) leave at once, so the
        # first scores are close to 0 and come from the interactions alone; w0 shifts every score equally
        # and cancels in pairwise ranking losses
        nn.init.normal_(self.V, std=0.01)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.w0)

    def _part(self, x: torch.Tensor, rows: slice) -> Tuple[torch.Tensor, torch.Tensor]:
        V = self.V[rows]  # (d, k)
        w = self.linear.weight[0, rows]  # (d,)
        p = x @ V  # (N, k)
        self_pairs = (x * x) @ (V * V).sum(dim=1)  # (N,): sum_j ||v_j||^2 x_j^2, the j = k terms to remove
        bias = x @ w + 0.5 * (p.pow(2).sum(dim=1) - self_pairs)
        return bias, p

    def user_part(self, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """User bias (``w0`` included) ``[U]`` and latent sum ``p`` ``[U, factors]`` of ``u`` ``[U, user_dim]``."""
        bias, p = self._part(u, slice(0, self.user_dim))
        return bias + self.w0, p

    def item_part(self, i: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Item bias ``[I]`` and latent sum ``q`` ``[I, factors]`` of ``i`` ``[I, item_dim]``."""
        return self._part(i, slice(self.user_dim, self.user_dim + self.item_dim))

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        user_bias, p = self.user_part(u)
        item_bias, q = self.item_part(i)
        return user_bias + item_bias + (p * q).sum(dim=1)  # (B,)

    @staticmethod
    def score_all_from_parts(user_parts: Tuple[torch.Tensor, torch.Tensor],
                             item_parts: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Scores ``[U, I]`` from :meth:`user_part` and :meth:`item_part` outputs (item parts can be computed
        once per evaluation and reused for every user batch)."""
        user_bias, p = user_parts
        item_bias, q = item_parts
        return torch.addmm(user_bias.unsqueeze(1) + item_bias.unsqueeze(0), p, q.t())

    def score_all(self, u: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Every user ``[U, user_dim]`` against every item ``[I, item_dim]``: ``[U, I]``."""
        return self.score_all_from_parts(self.user_part(u), self.item_part(items))

    def brute_force(self, x: torch.Tensor) -> torch.Tensor:
        """The defining formula, pair by pair, on ``x = [u; i]`` ``[B, user_dim + item_dim]``: ``[B]``.
        Quadratic in the input size; a reference for :meth:`forward`."""
        d = self.user_dim + self.item_dim
        upper = torch.triu(torch.ones(d, d, dtype=torch.bool, device=x.device), diagonal=1)  # j < k
        interactions = torch.where(upper, self.V @ self.V.t(), torch.zeros((), dtype=x.dtype, device=x.device))
        pairwise = torch.einsum("bj,jk,bk->b", x, interactions, x)
        return self.w0 + x @ self.linear.weight[0] + pairwise

    def extra_repr(self) -> str:
        return f"user_dim={self.user_dim}, item_dim={self.item_dim}, factors={self.factors}"
