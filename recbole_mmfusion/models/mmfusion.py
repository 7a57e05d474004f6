r"""MMFusion: text, image and item-graph encoders, attention fusion with missing-modality masks, and a
factorization machine over ``[user; item]``, trained with BPR.

Items are represented by their own modalities; users by their training history (their last reviews, and the
mean image and graph vectors of the items they interacted with), so a user is never an ID embedding and a new
user with a few interactions is scorable without retraining.

Feature modes (``feature_mode``):

- ``cached``: the text and image encoders are trained from scratch in their own stage (masked-LM; image-text
  contrast), their features cached on disk (:mod:`recbole_mmfusion.pretrain.features`); BPR trains the graph
  encoder, projections, fusion and FM on them.
- ``end2end``: both encoders are inside the model and the BPR loss reaches them; the batch's items are encoded
  with gradients, users' image vectors are means over a per-item feature memory refreshed as items are seen
  (and fully at every evaluation).
- ``precomputed``: item features from ``.npy`` files (e.g. MMRec's ``text_feat.npy`` / ``image_feat.npy``);
  a user's text and image vectors are the means over their training items.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType

from recbole_mmfusion.config import ConfigError
from recbole_mmfusion.encoders.graph import GraphEncoder, sample_neighbors
from recbole_mmfusion.fm import FactorizationMachine
from recbole_mmfusion.fusion import ModalityFusion
from recbole_mmfusion.modalities import config_modalities, history_csr, load_modality_inputs, load_precomputed

logger = logging.getLogger(__name__)

FEATURE_MODES = ("end2end", "cached", "precomputed")
MODALITIES = ("text", "image", "graph")
USER_TEXT_SOURCES = ("auto", "reviews", "items")


def history_mean(rowptr: torch.Tensor, items: torch.Tensor, features: torch.Tensor, item_mask: torch.Tensor):
    """Mean of ``features`` over each user's history, skipping items whose ``item_mask`` is False.

    Shapes:
        - input: ``rowptr`` :math:`(U + 1)`, ``items`` :math:`(nnz)`, ``features`` :math:`(I, d)`, ``item_mask`` :math:`(I)`
        - output: ``(mean (U, d), mask (U))``; a user with no usable item gets zeros and ``mask`` False
    """
    n_users = rowptr.numel() - 1
    users = torch.repeat_interleave(torch.arange(n_users, device=rowptr.device), rowptr.diff())
    keep = item_mask[items]
    users, items = users[keep], items[keep]
    count = torch.bincount(users, minlength=n_users).to(features.dtype)
    # a sparse [U, I] product, not features[items]: that copy would be one d-sized row per interaction
    weights = torch.sparse_coo_tensor(torch.stack([users, items]), (1.0 / count[users]).to(features.dtype),
                                      (n_users, features.shape[0]), check_invariants=False)
    return torch.sparse.mm(weights, features), count > 0


class MMFusion(GeneralRecommender):
    r"""Multimodal recommender: three encoders, masked attention fusion, a factorization machine, BPR loss.

    Every size is a key of ``properties/model/MMFusion.yaml``. Scores are
    :math:`\mathrm{FM}([u; i])` with :math:`u = \sum_m \alpha^u_m P^u_m x^u_m` and the same for items, where
    :math:`\alpha_m = \mathrm{softmax}_m(w^\top \tanh(W P_m x_m + b))` over the modalities present.
    """

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # options
        self.feature_mode = config["feature_mode"]
        if self.feature_mode not in FEATURE_MODES:
            raise ConfigError(f"feature_mode must be one of {', '.join(FEATURE_MODES)}, not {self.feature_mode!r}")
        try:
            chosen = config_modalities(config)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.modalities = [m for m in MODALITIES if m in chosen]
        if not self.modalities:
            raise ConfigError(f"modalities must be a non-empty subset of {list(MODALITIES)}")
        self.user_text_source = config["user_text_source"]
        if self.user_text_source not in USER_TEXT_SOURCES:
            raise ConfigError(f"user_text_source must be one of {', '.join(USER_TEXT_SOURCES)}")
        self.reg_weight = config["reg_weight"]
        self.history_sample = config["user_history_sample"] or 0

        # training history (the dataset given to a model is the training split)
        rowptr, items = history_csr(dataset)
        self.register_buffer("history_rowptr", rowptr, persistent=False)
        self.register_buffer("history_items", items, persistent=False)
        seen = torch.zeros(self.n_items, dtype=torch.bool)
        seen[items] = True
        seen[0] = False

        # modality inputs and features
        in_dims = {}
        self.feature_stats = {}
        inputs = None
        if self.feature_mode != "precomputed":
            inputs = load_modality_inputs(config, dataset)
        elif "graph" in self.modalities:  # the text and image sidecars are not read: the .npy files replace them
            inputs = load_modality_inputs({"data_path": config["data_path"], "dataset": config["dataset"],
                                           "modalities": ["graph"]}, dataset)
        if "text" in self.modalities or "image" in self.modalities:
            in_dims.update(self._init_content(config, dataset, inputs))
        if "graph" in self.modalities:
            self.graph_encoder = GraphEncoder(
                self.n_items, dim=config["graph_dim"], n_layers=config["graph_layers"],
                fanouts=tuple(config["graph_fanouts"]) if config["graph_fanouts"] else None,
            )
            self.graph_encoder.set_graph(inputs.graph_rowptr, inputs.graph_col, input_mask=seen)
            has_neighbors = inputs.graph_rowptr.diff() > 0
            # an item never trained on and without neighbours has nothing to encode
            self.register_buffer("item_graph_mask", (seen | has_neighbors) & (torch.arange(self.n_items) > 0),
                                 persistent=False)
            in_dims["graph"] = config["graph_dim"]

        # fusion and prediction
        dims = {m: in_dims[m] for m in self.modalities}
        self.item_fusion = ModalityFusion(dims, dim=config["fusion_dim"], attention_dim=config["attention_dim"])
        self.user_fusion = ModalityFusion(dims, dim=config["fusion_dim"], attention_dim=config["attention_dim"])
        self.fm = FactorizationMachine(config["fusion_dim"], config["fusion_dim"], factors=config["fm_factors"])

        # evaluation cache: every user and item representation, computed once per evaluation
        self.restore_user_parts = None
        self.restore_item_parts = None
        self.restore_item_graph = None  # every item's graph vector, for users given by a history
        self.other_parameter_name = []
        self.to(self.device)

    # ------------------------------------------------------------------ content features
    def _init_content(self, config, dataset, inputs) -> dict:
        """Set up text and image inputs for the feature mode; return the input size of each modality."""
        dims = {}
        if self.feature_mode == "precomputed":
            files = {"text": config["precomputed_text_file"], "image": config["precomputed_image_file"]}
            for modality in ("text", "image"):
                if modality not in self.modalities:
                    continue
                if not files[modality]:
                    raise ConfigError(f"feature_mode: precomputed with the {modality} modality needs "
                                     f"precomputed_{modality}_file (and precomputed_item_ids)")
                feats, mask = load_precomputed(files[modality], config["precomputed_item_ids"], dataset)
                self._set_item_content(modality, feats, mask)
                dims[modality] = feats.shape[1]
            return dims

        from recbole_mmfusion import pretrain

        if self.feature_mode == "cached":
            feature_set = pretrain.cached_features(config, inputs, self.device)
            self.feature_stats = dict(getattr(feature_set, "stats", {}) or {})
            self.feature_reference = feature_set.reference
            if "text" in self.modalities and self.user_text_source != "items":
                self._review_encoder = pretrain.features.review_encoder(config, inputs, self.device)
            if "text" in self.modalities:
                self._set_item_content("text", feature_set.item_text, feature_set.item_text_mask,
                                       feature_set.user_text, feature_set.user_text_mask)
                dims["text"] = feature_set.item_text.shape[1]
            if "image" in self.modalities:
                self._set_item_content("image", feature_set.item_image, feature_set.item_image_mask)
                dims["image"] = feature_set.item_image.shape[1]
            return dims

        # end2end: the encoders live in the model
        tokenizer, self.text_encoder, self.image_encoder = pretrain.encoder_init(config, inputs, self.device)
        self.feature_reference = {"keys": pretrain.features.pipeline_keys(config, inputs)}
        self.tokenizer, self.text_max_length = tokenizer, config["text_max_length"]
        self.encode_batch_size = config["encode_batch_size"]
        if "text" in self.modalities:
            ids, att = pretrain.tokenize(tokenizer, inputs.item_text, config["text_max_length"])
            # kept on the CPU (batches are moved when encoded), in int32 to halve their memory
            self.item_tokens, self.item_attention = ids.int(), att.int()
            self.register_buffer("item_text_mask", torch.tensor([bool(t) for t in inputs.item_text]),
                                 persistent=False)
            ids, att = pretrain.tokenize(tokenizer, inputs.user_text, config["text_max_length"])
            self.user_tokens, self.user_attention = ids.int(), att.int()
            self.register_buffer("user_review_mask", torch.tensor([bool(t) for t in inputs.user_text]),
                                 persistent=False)
            if self.user_text_source == "items":
                self.user_review_mask.zero_()
            dims["text"] = self.text_encoder.out_dim
        else:
            self.text_encoder = None
        if "image" in self.modalities:
            self.item_images, image_mask = pretrain.load_images(inputs.item_image_files, config["image_input_size"])
            self.register_buffer("item_image_mask", image_mask, persistent=False)
            dims["image"] = self.image_encoder.out_dim
        else:
            self.image_encoder = None
        # per-item feature memory behind the users' history means; filled now, refreshed as items are seen
        for modality, dim in dims.items():
            self.register_buffer(f"{modality}_memory", torch.zeros(self.n_items, dim, device=self.device),
                                 persistent=False)
        self._refresh_memory()
        return dims

    def _set_item_content(self, modality, item_feats, item_mask, user_feats=None, user_mask=None):
        """Store fixed item features and the user features built from them (cached / precomputed)."""
        item_feats = torch.as_tensor(item_feats, dtype=torch.float32)
        item_mask = torch.as_tensor(item_mask, dtype=torch.bool).clone()
        item_mask[0] = False
        mean, mean_mask = history_mean(self.history_rowptr, self.history_items, item_feats, item_mask)
        if modality == "text" and user_feats is not None and self.user_text_source != "items":
            review_mask = torch.as_tensor(user_mask, dtype=torch.bool)
            user_feats = torch.as_tensor(user_feats, dtype=torch.float32)
            if self.user_text_source == "reviews":
                mean, mean_mask = user_feats, review_mask
            else:
                mean = torch.where(review_mask.unsqueeze(1), user_feats, mean)
                mean_mask = review_mask | mean_mask
        self.register_buffer(f"item_{modality}_feat", item_feats, persistent=False)
        self.register_buffer(f"item_{modality}_mask", item_mask, persistent=False)
        self.register_buffer(f"user_{modality}_feat", mean, persistent=False)
        self.register_buffer(f"user_{modality}_mask", mean_mask, persistent=False)

    # ------------------------------------------------------------------ end2end encoders
    def _encode_text(self, tokens: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        width = max(int(attention.sum(dim=1).max()), 1)  # pad to this batch's longest text, not the corpus'
        return self.text_encoder(tokens[:, :width].to(self.device, torch.long),
                                 attention[:, :width].to(self.device, torch.long))

    def _encode_items(self, modality: str, items: torch.Tensor) -> torch.Tensor:
        """Encode ``items`` with the in-model encoder (gradients flow) and refresh their memory rows.

        Only items that have the modality are encoded; the others get zero rows (their mask is False).
        """
        memory = getattr(self, f"{modality}_memory")
        has = getattr(self, f"item_{modality}_mask")[items]
        out = torch.zeros(items.numel(), memory.shape[1], device=self.device)
        present = items[has]
        if present.numel():
            cpu_items = present.cpu()
            if modality == "text":
                encoded = self._encode_text(self.item_tokens[cpu_items], self.item_attention[cpu_items])
            else:
                from recbole_mmfusion.encoders.image import to_float_images
                encoded = self.image_encoder(to_float_images(self.item_images[cpu_items].to(self.device)))
            out = out.index_put((has.nonzero().flatten(),), encoded)
            memory[present] = encoded.detach()
        return out

    @torch.no_grad()
    def _refresh_memory(self):
        """Encode every item into the feature memory (end2end)."""
        every = torch.arange(self.n_items)
        for start in range(0, self.n_items, self.encode_batch_size):
            chunk = every[start:start + self.encode_batch_size].to(self.device)
            for modality in ("text", "image"):
                if modality in self.modalities:
                    was = getattr(self, f"{modality}_encoder").training
                    getattr(self, f"{modality}_encoder").eval()
                    self._encode_items(modality, chunk)
                    getattr(self, f"{modality}_encoder").train(was)

    def _item_content(self, modality: str, items: torch.Tensor):
        if self.feature_mode == "end2end":
            # training encodes the batch's items; evaluation reads the memory refreshed just before it
            features = self._encode_items(modality, items) if self.training else getattr(self, f"{modality}_memory")[items]
            return features, getattr(self, f"item_{modality}_mask")[items]
        return getattr(self, f"item_{modality}_feat")[items], getattr(self, f"item_{modality}_mask")[items]

    def _user_content(self, modality: str, users: torch.Tensor):
        if self.feature_mode != "end2end":
            return getattr(self, f"user_{modality}_feat")[users], getattr(self, f"user_{modality}_mask")[users]
        memory = getattr(self, f"{modality}_memory")
        item_mask = self.item_text_mask if modality == "text" else self.item_image_mask
        rowptr, items = self._user_histories(users, sample=0)
        mean, mean_mask = history_mean(rowptr, items, memory, item_mask)
        if modality == "image":
            return mean, mean_mask
        reviews = self.user_review_mask[users]
        if reviews.any():
            cpu_users = users[reviews].cpu()
            step = cpu_users.numel() if self.training else self.encode_batch_size
            encoded = torch.cat([self._encode_text(self.user_tokens[chunk], self.user_attention[chunk])
                                 for chunk in cpu_users.split(step)])
            mean = mean.index_put((reviews.nonzero().flatten(),), encoded)
        if self.user_text_source == "reviews":
            return mean, reviews
        return mean, reviews | mean_mask

    # ------------------------------------------------------------------ graph
    def _user_histories(self, users: torch.Tensor, sample: int):
        """CSR of the given users' training items (``sample`` > 0 keeps at most that many per user)."""
        targets, positions = sample_neighbors(self.history_rowptr, self.history_items, users, sample or None)
        counts = torch.bincount(positions, minlength=users.numel())
        rowptr = torch.zeros(users.numel() + 1, dtype=torch.long, device=users.device)
        rowptr[1:] = counts.cumsum(0)
        order = torch.argsort(positions, stable=True)
        return rowptr, targets[order]

    def _graph_vectors(self, users: torch.Tensor, items: torch.Tensor):
        """Graph vectors of ``items`` and of ``users`` (the mean over their training items), in one pass."""
        sample = self.history_sample if self.training else 0
        rowptr, history = self._user_histories(users, sample)
        nodes, inverse = torch.unique(torch.cat([items, history]), return_inverse=True)
        encoded = self.graph_encoder(nodes)
        item_vec = encoded[inverse[: items.numel()]]
        local = inverse[items.numel():]
        user_vec, user_mask = history_mean(rowptr, local, encoded, torch.ones(nodes.numel(), dtype=torch.bool,
                                                                              device=nodes.device))
        return item_vec, self.item_graph_mask[items], user_vec, user_mask

    # ------------------------------------------------------------------ representations
    def represent(self, users: torch.Tensor, items: torch.Tensor):
        """Fused user and item vectors and their attention weights.

        Returns:
            tuple: ``(user [U, d], user_alpha [U, M], item [I, d], item_alpha [I, M])``
        """
        user_in, user_masks, item_in, item_masks = {}, {}, {}, {}
        if "graph" in self.modalities:
            item_in["graph"], item_masks["graph"], user_in["graph"], user_masks["graph"] = \
                self._graph_vectors(users, items)
        for modality in ("text", "image"):
            if modality in self.modalities:
                item_in[modality], item_masks[modality] = self._item_content(modality, items)
                user_in[modality], user_masks[modality] = self._user_content(modality, users)
        user, user_alpha = self.user_fusion(user_in, user_masks)
        item, item_alpha = self.item_fusion(item_in, item_masks)
        return user, user_alpha, item, item_alpha

    def calculate_loss(self, interaction):
        self.restore_user_parts = self.restore_item_parts = self.restore_item_graph = None
        user = interaction[self.USER_ID]
        pos_item = interaction[self.ITEM_ID]
        neg_item = interaction[self.NEG_ITEM_ID]
        users, user_index = torch.unique(user, return_inverse=True)
        items, item_index = torch.unique(torch.cat([pos_item, neg_item]), return_inverse=True)
        user_vec, _, item_vec, _ = self.represent(users, items)
        u = user_vec[user_index]
        pos = item_vec[item_index[: pos_item.numel()]]
        neg = item_vec[item_index[pos_item.numel():]]
        pos_score, neg_score = self.fm(u, pos), self.fm(u, neg)
        loss = -F.logsigmoid(pos_score - neg_score).mean()
        if self.reg_weight and "graph" in self.modalities:
            embedding = self.graph_encoder.embedding(torch.cat([pos_item, neg_item]))
            loss = loss + self.reg_weight * embedding.pow(2).sum(dim=1).mean()
        return loss

    def predict(self, interaction):
        """Scores of the given (user, item) pairs. Returns ``[B]``."""
        user = interaction[self.USER_ID]
        item = interaction[self.ITEM_ID]
        user_vec, _, item_vec, _ = self.represent(user, item)
        return self.fm(user_vec, item_vec)

    @torch.no_grad()
    def _all_parts(self):
        every_item = torch.arange(self.n_items, device=self.device)
        every_user = torch.arange(self.n_users, device=self.device)
        if self.feature_mode == "end2end":
            self._refresh_memory()
        user_vec, _, item_vec, _ = self.represent(every_user, every_item)
        return self.fm.user_part(user_vec), self.fm.item_part(item_vec)

    def full_sort_predict(self, interaction):
        """Scores of every item for the batch's users. Returns ``[B * n_items]``."""
        if self.restore_user_parts is None or self.restore_item_parts is None:
            self.restore_user_parts, self.restore_item_parts = self._all_parts()
        user = interaction[self.USER_ID]
        user_bias, user_factors = self.restore_user_parts
        item_bias, item_factors = self.restore_item_parts
        scores = user_bias[user].unsqueeze(1) + item_bias.unsqueeze(0) + user_factors[user] @ item_factors.T
        return scores.view(-1)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # the trainer loads the best checkpoint before testing: representations cached from the last
        # validation belong to other weights
        self.restore_user_parts = self.restore_item_parts = self.restore_item_graph = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------ users given by a history
    @property
    def reads_reviews(self) -> bool:
        """Whether users' review texts reach this model (:meth:`encode_reviews` works)."""
        return ("text" in self.modalities and self.user_text_source != "items"
                and self.feature_mode != "precomputed")

    @torch.no_grad()
    def encode_reviews(self, documents: list[str]):
        """User documents (review lines joined as the converter joins them) as text inputs: ``([n, D_t], [n])``.

        They are encoded exactly as the training users' reviews were, so a new user with a training user's
        history and reviews gets that user's representation.
        """
        if not self.reads_reviews:
            raise ValueError("this model does not read user reviews (no text modality, user_text_source: items, "
                             "or feature_mode: precomputed)")
        if self.feature_mode == "cached":
            feats, mask = self._review_encoder(documents)
            return feats.to(self.device), mask.to(self.device)
        if self.feature_mode == "end2end":
            from recbole_mmfusion import pretrain

            was = self.text_encoder.training
            self.text_encoder.eval()
            ids, att = pretrain.tokenize(self.tokenizer, documents, self.text_max_length)
            feats = self._encode_text(ids, att)
            self.text_encoder.train(was)
            return feats, torch.tensor([bool(d) for d in documents], device=self.device)

    @torch.no_grad()
    def history_inputs(self, rowptr: torch.Tensor, items: torch.Tensor, review_feats=None, review_mask=None):
        """Per-modality user inputs built from the given histories, as :meth:`represent` builds a training user's.

        Shapes:
            - input: ``rowptr`` :math:`(U + 1)`, ``items`` :math:`(nnz)` internal item ids; ``review_feats``
              :math:`(U, D_t)` and ``review_mask`` :math:`(U)` optional (see :meth:`encode_reviews`)
            - output: ``(inputs, masks)``: modality -> :math:`(U, d_m)` and :math:`(U)`
        """
        rowptr, items = rowptr.to(self.device), items.to(self.device)
        inputs, masks = {}, {}
        if "graph" in self.modalities:
            inputs["graph"], masks["graph"] = self._graph_history_mean(rowptr, items)
        for modality in ("text", "image"):
            if modality not in self.modalities:
                continue
            table = getattr(self, f"{modality}_memory" if self.feature_mode == "end2end" else f"item_{modality}_feat")
            mean, mask = history_mean(rowptr, items, table, getattr(self, f"item_{modality}_mask"))
            # as _set_item_content: precomputed text has no user features, so every user takes the item mean
            if modality == "text" and self.user_text_source != "items" and self.feature_mode != "precomputed":
                has = (torch.zeros(mask.shape, dtype=torch.bool, device=self.device) if review_mask is None
                       else review_mask.to(self.device))
                if self.user_text_source == "reviews":
                    mean, mask = (review_feats.to(self.device) if review_feats is not None else mean), has
                elif has.any():
                    mean = torch.where(has.unsqueeze(1), review_feats.to(self.device), mean)
                    mask = has | mask
            inputs[modality], masks[modality] = mean, mask
        return inputs, masks

    @torch.no_grad()
    def _item_graph_table(self) -> torch.Tensor:
        """Every item's graph vector ``[n_items, graph_dim]``, encoded once (in eval mode the encoder reads
        every neighbour, so a node's vector does not depend on which other nodes are encoded with it)."""
        if self.restore_item_graph is None:
            was = self.training
            self.eval()
            every = torch.arange(self.n_items, device=self.device)
            self.restore_item_graph = torch.cat([self.graph_encoder(chunk) for chunk in every.split(65536)])
            self.train(was)
        return self.restore_item_graph

    def _graph_history_mean(self, rowptr: torch.Tensor, items: torch.Tensor):
        """Mean graph vector over each history (every item has one), as :meth:`_graph_vectors` gives a user."""
        every = torch.ones(self.n_items, dtype=torch.bool, device=self.device)
        return history_mean(rowptr, items, self._item_graph_table(), every)

    @torch.no_grad()
    def user_attention(self, users: torch.Tensor) -> torch.Tensor:
        """Attention of training users over their modalities, as :meth:`represent` computes it. Returns ``[U, M]``."""
        users = users.to(self.device)
        inputs, masks = {}, {}
        if "graph" in self.modalities:
            inputs["graph"], masks["graph"] = self._graph_history_mean(*self._user_histories(users, sample=0))
        for modality in ("text", "image"):
            if modality in self.modalities:
                inputs[modality], masks[modality] = self._user_content(modality, users)
        return self.user_fusion(inputs, masks)[1]

    @torch.no_grad()
    def full_sort_predict_histories(self, rowptr: torch.Tensor, items: torch.Tensor, review_feats=None,
                                    review_mask=None):
        """Scores of every item for users given by their histories (no retraining). Returns
        ``(scores [U, n_items], user attention [U, M])``."""
        if self.restore_item_parts is None:
            self.restore_user_parts, self.restore_item_parts = self._all_parts()
        inputs, masks = self.history_inputs(rowptr, items, review_feats, review_mask)
        user, alpha = self.user_fusion(inputs, masks)
        user_bias, user_factors = self.fm.user_part(user)
        item_bias, item_factors = self.restore_item_parts
        return user_bias.unsqueeze(1) + item_bias.unsqueeze(0) + user_factors @ item_factors.T, alpha

    @torch.no_grad()
    def item_modality_vectors(self, items: torch.Tensor):
        """Each modality's projection of ``items`` (the space the attention compares) and the item attention.

        Returns:
            tuple: ``(vectors, masks, alpha)``: modality -> :math:`(I, \text{fusion\_dim})` and :math:`(I)`;
            ``alpha`` :math:`(I, M)` in the order of :attr:`modalities`
        """
        items = items.to(self.device)
        inputs, masks = {}, {}
        if "graph" in self.modalities:
            inputs["graph"], masks["graph"] = self._item_graph_table()[items], self.item_graph_mask[items]
        for modality in ("text", "image"):
            if modality in self.modalities:
                inputs[modality], masks[modality] = self._item_content(modality, items)
        _, alpha = self.item_fusion(inputs, masks)
        vectors = {m: self.item_fusion.project(m, torch.where(masks[m].unsqueeze(1), inputs[m], 0.0))
                   for m in self.modalities}
        return vectors, masks, alpha

    # ------------------------------------------------------------------ reporting
    @torch.no_grad()
    def attention_summary(self) -> dict:
        """Mean attention weight of each modality over all users and over all items (PAD excluded)."""
        was = self.training
        self.eval()
        users = torch.arange(1, self.n_users, device=self.device)
        items = torch.arange(1, self.n_items, device=self.device)
        _, user_alpha, _, item_alpha = self.represent(users, items)
        self.train(was)
        return {
            "users": {m: float(user_alpha[:, k].mean()) for k, m in enumerate(self.modalities)},
            "items": {m: float(item_alpha[:, k].mean()) for k, m in enumerate(self.modalities)},
        }
