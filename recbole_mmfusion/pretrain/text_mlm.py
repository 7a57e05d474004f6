"""Masked-LM pretraining of the text encoder on the dataset's own item and review text (no outside weights).

A :class:`~transformers.DistilBertForMaskedLM` is built from the encoder's own config, starts from the encoder's
current weights, learns to recover masked tokens (BERT's 80/10/10 mask/random/keep rule, via
:class:`~transformers.DataCollatorForLanguageModeling`), and its DistilBERT body is copied back into the encoder.
A plain loop (AdamW, linear warmup then decay, gradient clipping) stands in for the Trainer, which needs
``accelerate``.
"""

from __future__ import annotations

import logging
import math
import time

import torch
from transformers import DataCollatorForLanguageModeling, DistilBertForMaskedLM, get_linear_schedule_with_warmup

from recbole_mmfusion.pretrain import seeded

logger = logging.getLogger(__name__)

WARMUP_RATIO = 0.1   # share of the optimiser steps spent warming the learning rate up from 0
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0


def pretrain_text_encoder(encoder, tokenizer, texts: list[str], *, epochs: int, lr: float, batch_size: int,
                          mlm_probability: float, max_length: int, seed: int, device="cpu",
                          progress: bool = False) -> dict:
    """Train ``encoder`` (a :class:`~recbole_mmfusion.encoders.text.TextEncoder`) in place by masked-LM.

    Args:
        encoder: the text encoder; its weights are the starting point and receive the result.
        tokenizer: the dataset's tokenizer (needs ``[MASK]``; its ids must fit the encoder's vocabulary).
        texts: training documents; empty ones are skipped.
        epochs, lr, batch_size: passes over ``texts``, peak learning rate, sequences per step.
        mlm_probability: share of (non-special) tokens chosen for prediction.
        max_length: longest sequence in tokens, ``[CLS]`` and ``[SEP]`` included.
        seed: seeds the shuffling, the masking and dropout, so a run repeats exactly within a process.
        device: where to train; the encoder is left on the device it came from.
        progress: show a tqdm bar per epoch.

    Returns:
        ``{"losses": mean loss per epoch, "sequences": N, "steps", "seconds", "sequences_per_s"}``.
    """
    if len(tokenizer) > encoder.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} entries but the encoder's vocabulary only "
                         f"{encoder.config.vocab_size}")
    max_length = min(max_length, encoder.config.max_position_embeddings)
    corpus = [t for t in texts if t]
    stats = {"losses": [], "sequences": len(corpus), "steps": 0, "seconds": 0.0, "sequences_per_s": 0.0}
    if not corpus or epochs <= 0:
        logger.warning("masked-LM pretraining skipped: %s", "no text" if not corpus else "0 epochs")
        return stats
    ids = tokenizer(corpus, truncation=True, max_length=max_length)["input_ids"]
    home = next(encoder.parameters()).device
    device = torch.device(device)
    with seeded(seed, device):
        model = DistilBertForMaskedLM(encoder.config)
        model.distilbert.load_state_dict(encoder.bert.state_dict())
        model.to(device).train()
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
        steps_per_epoch = math.ceil(len(ids) / batch_size)
        total = epochs * steps_per_epoch
        scheduler = get_linear_schedule_with_warmup(optimizer, max(1, int(WARMUP_RATIO * total)), total)
        order_rng = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        for epoch in range(epochs):
            order = torch.randperm(len(ids), generator=order_rng).tolist()
            batches = range(0, len(order), batch_size)
            if progress:
                from tqdm.auto import tqdm
                batches = tqdm(batches, desc=f"masked-LM epoch {epoch + 1}/{epochs}", leave=False)
            loss_sum, counted = 0.0, 0
            for begin in batches:
                batch = collator([{"input_ids": ids[i]} for i in order[begin:begin + batch_size]])
                labels = batch["labels"].to(device)
                if not bool((labels != -100).any()):  # nothing masked in this batch: no loss to take
                    scheduler.step()
                    continue
                input_ids = batch["input_ids"].to(device)
                mask = batch.get("attention_mask")
                mask = (input_ids != tokenizer.pad_token_id).long() if mask is None else mask.to(device)
                loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach())
                counted += 1
                stats["steps"] += 1
            stats["losses"].append(loss_sum / max(counted, 1))
            logger.info("masked-LM epoch %d/%d: loss %.4f", epoch + 1, epochs, stats["losses"][-1])
        seconds = time.perf_counter() - start
    encoder.bert.load_state_dict(model.distilbert.state_dict())
    encoder.to(home)
    stats["seconds"] = seconds
    stats["sequences_per_s"] = epochs * len(ids) / max(seconds, 1e-9)
    logger.info("masked-LM pretraining: %d sequences x %d epochs in %.1f s (%.1f sequences/s)",
                len(ids), epochs, seconds, stats["sequences_per_s"])
    return stats
