"""Text encoder: a DistilBERT built from a config (no pretrained weights) whose [CLS] vector encodes a text."""

from __future__ import annotations

import torch
from torch import nn
from transformers import DistilBertConfig, DistilBertModel


def distilbert_config(*, vocab_size: int, dim: int = 768, n_layers: int = 6, n_heads: int = 12,
                      hidden_dim: int = 3072, max_length: int = 512, dropout: float = 0.1,
                      pad_token_id: int = 0) -> DistilBertConfig:
    """The DistilBERT architecture at the given sizes; shared by the encoder and its masked-LM pretraining."""
    if dim % n_heads:
        raise ValueError(f"text_dim ({dim}) must be a multiple of text_heads ({n_heads})")
    return DistilBertConfig(
        vocab_size=vocab_size, dim=dim, n_layers=n_layers, n_heads=n_heads, hidden_dim=hidden_dim,
        max_position_embeddings=max_length, dropout=dropout, attention_dropout=dropout,
        pad_token_id=pad_token_id,
    )


class TextEncoder(nn.Module):
    r"""DistilBERT encoder returning one vector per text: the [CLS] hidden state, or the mean over tokens.

    The weights start from DistilBERT's own random initialisation; they are trained by masked-LM
    pretraining (``feature_mode: cached``) or by the recommendation loss (``feature_mode: end2end``).

    Args:
        vocab_size (int): tokenizer vocabulary size.
        dim (int): hidden size, the output size (default: ``768``).
        n_layers (int): transformer layers (default: ``6``).
        n_heads (int): attention heads (default: ``12``).
        hidden_dim (int): feed-forward size (default: ``3072``).
        max_length (int): longest input in tokens (default: ``512``).
        dropout (float): dropout inside the transformer (default: ``0.1``).
        pad_token_id (int): id of ``[PAD]`` (default: ``0``).
        pooling (str): ``"cls"``, the final hidden state of the first token, or ``"mean"``, the mean of the
            final hidden states of the text's tokens (default: ``"cls"``). Masked-LM trains the token states and
            never the [CLS] state by itself, so after masked-LM alone ``"mean"`` varies far more across texts.

    Shapes:
        - input: ``input_ids`` :math:`(B, L)` int64, ``attention_mask`` :math:`(B, L)` (1 = token, 0 = padding)
        - output: :math:`(B, \text{dim})`
    """

    def __init__(self, *, vocab_size: int, dim: int = 768, n_layers: int = 6, n_heads: int = 12,
                 hidden_dim: int = 3072, max_length: int = 512, dropout: float = 0.1, pad_token_id: int = 0,
                 pooling: str = "cls"):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"text_pooling must be 'cls' or 'mean', not {pooling!r}")
        self.pooling = pooling
        self.config = distilbert_config(vocab_size=vocab_size, dim=dim, n_layers=n_layers, n_heads=n_heads,
                                        hidden_dim=hidden_dim, max_length=max_length, dropout=dropout,
                                        pad_token_id=pad_token_id)
        self.bert = DistilBertModel(self.config)
        self.out_dim = dim
        self.max_length = max_length

    def reset_parameters(self):
        self.bert.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, dim)
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    @torch.no_grad()
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """:meth:`forward` over many texts in eval mode, ``batch_size`` at a time, on the encoder's device."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = [self(input_ids[i:i + batch_size].to(device), attention_mask[i:i + batch_size].to(device))
               for i in range(0, len(input_ids), batch_size)]
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.out_dim, device=device)
