r"""VBPR: visual Bayesian personalised ranking (He & McAuley, AAAI 2016), a content-aware matrix factorisation.

Reference:
    Ruining He and Julian McAuley. "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback." AAAI 2016.

Item content features come from the same places as MMFusion's (``feature_mode``): ``cached``, the encoders
pretrained from scratch by :mod:`recbole_mmfusion.pretrain.features` (one cache shared with MMFusion when the
encoder keys agree), or ``precomputed``, ``.npy`` files matched to raw item ids. ``end2end`` is not supported.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_mmfusion.config import ConfigError
from recbole_mmfusion.modalities import load_modality_inputs, load_precomputed, name_list

logger = logging.getLogger(__name__)

CHANNELS = ("image", "text")
FEATURE_MODES = ("cached", "precomputed")
STD_FLOOR = 1e-6  # a feature dimension that is constant over the items is centred to 0, not blown up


class _ConfigView:
    """``config`` with some keys replaced, read-only: what the cached feature pipeline is given."""

    def __init__(self, config, **overrides):
        self._config, self._overrides = config, overrides

    def __getitem__(self, key):
        return self._overrides[key] if key in self._overrides else self._config[key]

    def __contains__(self, key):
        return key in self._overrides or key in self._config


def standardise(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-dimension z-scores over the rows where ``mask`` is True (std floored), divided by :math:`\sqrt{d}`
    so that a feature vector has unit length on average whatever its size; the other rows are zero.

    Without the :math:`1/\sqrt{d}`, a 2048-d feature makes the content term of a fresh model about
    :math:`\sqrt{d}` times larger than the ID term, and it overfits within a few epochs (amazon-demo: validation
    NDCG@20 0.088 against 0.128 with it).

    Shapes:
        - input: ``features`` :math:`(I, d)`, ``mask`` :math:`(I)` bool
        - output: :math:`(I, d)` float32
    """
    features = torch.as_tensor(features, dtype=torch.float32)
    out = torch.zeros_like(features)
    if mask.any():
        rows = features[mask]
        scale = rows.std(dim=0, unbiased=False).clamp_min(STD_FLOOR) * features.shape[1] ** 0.5
        out[mask] = (rows - rows.mean(dim=0)) / scale
    return out


class VBPR(GeneralRecommender):
    r"""BPR matrix factorisation plus a content term per channel (image; image and text for VBPR-T).

    .. math::
        \hat{y}_{ui} = \beta_i + \gamma_u^\top \gamma_i
            + \sum_{c \in \text{channels}} \theta_u^{c\top} (E_c f^c_i) + \beta_c'^\top f^c_i

    :math:`f^c_i` is item :math:`i`'s feature vector of channel :math:`c`, standardised per dimension over the
    items that have one and scaled to unit mean length (:func:`standardise`); an item without it has :math:`f^c_i = 0`, so its channel-:math:`c` term is zero.
    Trained with BPR (one sampled negative) plus ``reg_weight`` times the batch's squared norms of
    :math:`\gamma_u, \theta_u, \gamma_i, \beta_i` (per row, averaged over the batch) and ``reg_weight_content``
    times :math:`\sum_c \|E_c\|^2 + \|\beta'_c\|^2` (added once per batch).

    Args (config keys, defaults in ``properties/model/VBPR.yaml``):
        embedding_size (int): size of :math:`\gamma_u, \gamma_i` (default: 64).
        visual_embedding_size (int): size of :math:`\theta^c_u` and of :math:`E_c f^c_i` (default: 64).
        vbpr_channels (list): non-empty subset of ``[image, text]`` (default: ``[image]``).
        feature_mode (str): ``cached`` or ``precomputed`` (default: ``cached``).
        reg_weight (float): L2 weight on the batch's ID embeddings and item biases (default: 1e-05).
        reg_weight_content (float): L2 weight on every :math:`E_c` and :math:`\beta'_c` (default: 0.1).

    Shapes:
        - item features of channel :math:`c`: :math:`(n\_items, D_c)` ->
          :math:`E_c`: :math:`(n\_items, \text{visual\_embedding\_size})`
        - ``predict``: :math:`(B)`; ``full_sort_predict``: :math:`(B \cdot n\_items)`
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # options
        self.feature_mode = config["feature_mode"]
        if self.feature_mode not in FEATURE_MODES:
            raise ConfigError(f"VBPR supports feature_mode {' or '.join(FEATURE_MODES)}, not {self.feature_mode!r}")
        chosen = name_list(config["vbpr_channels"] or [])
        if not chosen or not set(chosen) <= set(CHANNELS):
            raise ConfigError(f"vbpr_channels must be a non-empty subset of {list(CHANNELS)}, not {chosen}")
        self.channels = [c for c in CHANNELS if c in chosen]
        self.embedding_size = config["embedding_size"]
        self.visual_embedding_size = config["visual_embedding_size"]
        self.reg_weight = config["reg_weight"]
        self.reg_weight_content = config["reg_weight_content"]

        # content features, standardised; items without one get zeros
        features = self._load_features(config, dataset)
        n_real = self.n_items - 1
        self.feature_stats["items"] = n_real
        for channel, (feats, mask) in features.items():
            mask = torch.as_tensor(mask, dtype=torch.bool).clone()
            mask[0] = False  # [PAD]
            self.register_buffer(f"item_{channel}_feat", standardise(feats, mask), persistent=False)
            missing = n_real - int(mask.sum())
            self.feature_stats[f"items_without_{channel}"] = missing
            if missing:
                logger.warning("VBPR: %d of %d items have no %s feature; their %s term is zero",
                               missing, n_real, channel, channel)

        # parameters
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)      # gamma_u
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)      # gamma_i
        self.item_bias = nn.Embedding(self.n_items, 1)                             # beta_i
        self.user_content = nn.ModuleDict({c: nn.Embedding(self.n_users, self.visual_embedding_size)
                                           for c in self.channels})                # theta_u^c
        self.projection = nn.ModuleDict({c: nn.Linear(features[c][0].shape[1], self.visual_embedding_size,
                                                      bias=False) for c in self.channels})  # E_c
        self.content_bias = nn.ParameterDict({c: nn.Parameter(torch.zeros(features[c][0].shape[1]))
                                              for c in self.channels})             # beta'_c

        # evaluation cache: every item's [gamma_i; E_c f_i ...] and bias, computed once per evaluation
        self.restore_item_e = self.restore_item_bias = None
        self.reset_parameters()
        self.to(self.device)

    def reset_parameters(self):
        """Xavier normal for embeddings and projections (as RecBole's ``xavier_normal_initialization``), zero biases."""
        for module in (self.user_embedding, self.item_embedding, *self.user_content.values(),
                       *self.projection.values()):
            nn.init.xavier_normal_(module.weight)
        nn.init.zeros_(self.item_bias.weight)
        for bias in self.content_bias.values():
            nn.init.zeros_(bias)

    def _load_features(self, config, dataset) -> dict:
        """``{channel: (features [n_items, D], mask [n_items])}``; fills ``self.feature_stats``."""
        self.feature_stats = {}
        if self.feature_mode == "precomputed":
            out, files = {}, {"image": config["precomputed_image_file"], "text": config["precomputed_text_file"]}
            for channel in self.channels:
                path = files[channel]
                if not path:
                    raise ConfigError(f"feature_mode: precomputed with the {channel} channel needs "
                                      f"precomputed_{channel}_file (and precomputed_item_ids)")
                out[channel] = load_precomputed(path, config["precomputed_item_ids"], dataset)
            return out

        from recbole_mmfusion import pretrain

        # the pipeline reads config_modalities(); user text is never used here, so it is not encoded (the
        # item-text cache key does not depend on user_text_source: MMFusion and VBPR share the cached files)
        view = _ConfigView(config, modalities=list(self.channels), user_text_source="items")
        inputs = load_modality_inputs(view, dataset)
        feature_set = pretrain.cached_features(view, inputs, self.device)
        self.feature_stats.update(getattr(feature_set, "stats", {}) or {})
        self.feature_reference = feature_set.reference
        return {c: (getattr(feature_set, f"item_{c}"), getattr(feature_set, f"item_{c}_mask")) for c in self.channels}

    # ------------------------------------------------------------------ scoring
    def _user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """``[gamma_u; theta_u^c ...]``. Returns ``[B, embedding_size + len(channels) * visual_embedding_size]``."""
        return torch.cat([self.user_embedding(users)] + [self.user_content[c](users) for c in self.channels], dim=1)

    def _item_vectors(self, items: torch.Tensor):
        """``([gamma_i; E_c f^c_i ...] [B, D], beta_i + sum_c beta'_c . f^c_i [B])``."""
        parts, bias = [self.item_embedding(items)], self.item_bias(items).squeeze(1)
        for c in self.channels:
            feats = getattr(self, f"item_{c}_feat")[items]
            parts.append(self.projection[c](feats))
            bias = bias + feats @ self.content_bias[c]
        return torch.cat(parts, dim=1), bias

    def calculate_loss(self, interaction):
        self.restore_item_e = self.restore_item_bias = None
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        u = self._user_vectors(user)
        pos, pos_bias = self._item_vectors(pos_item)
        neg, neg_bias = self._item_vectors(neg_item)
        pos_score = (u * pos).sum(dim=1) + pos_bias
        neg_score = (u * neg).sum(dim=1) + neg_bias
        loss = -F.logsigmoid(pos_score - neg_score).mean()
        if self.reg_weight:
            # u holds gamma_u and every theta_u; the item side is gamma_i and beta_i (not the fixed content)
            reg = (u.pow(2).sum() + self.item_embedding(pos_item).pow(2).sum()
                   + self.item_embedding(neg_item).pow(2).sum()
                   + self.item_bias(pos_item).pow(2).sum() + self.item_bias(neg_item).pow(2).sum())
            loss = loss + self.reg_weight * reg / user.numel()
        if self.reg_weight_content:
            reg = sum(self.projection[c].weight.pow(2).sum() + self.content_bias[c].pow(2).sum()
                      for c in self.channels)
            loss = loss + self.reg_weight_content * reg
        return loss

    def predict(self, interaction):
        """Scores of the given (user, item) pairs. Returns ``[B]``."""
        item_vec, item_bias = self._item_vectors(interaction[self.ITEM_ID])
        return (self._user_vectors(interaction[self.USER_ID]) * item_vec).sum(dim=1) + item_bias

    def full_sort_predict(self, interaction):
        """Scores of every item for the batch's users, one matrix product. Returns ``[B * n_items]``."""
        if self.restore_item_e is None or self.restore_item_bias is None:
            with torch.no_grad():
                self.restore_item_e, self.restore_item_bias = self._item_vectors(
                    torch.arange(self.n_items, device=self.device))
        u = self._user_vectors(interaction[self.USER_ID])
        return (u @ self.restore_item_e.T + self.restore_item_bias.unsqueeze(0)).view(-1)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # the trainer loads the best checkpoint before testing: item vectors cached from the last validation
        # belong to other weights
        self.restore_item_e = self.restore_item_bias = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
