"""A WordPiece tokenizer trained on the dataset's own text, kept as one JSON file.

Training with ``tokenizers`` is not deterministic across processes (the vocabulary ids differ run to run), so a
tokenizer is trained once per key and its file is reused: every later run, and the encoder weights trained with
it, see the same ids.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from recbole_mmfusion.fileio import write_text_atomic

logger = logging.getLogger(__name__)

#: special tokens, in id order: [PAD] is 0, the padding id the text encoder expects
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_NAMED = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
          "mask_token": "[MASK]"}


def tokenizer_path(cache_dir, key: str) -> Path:
    """``<cache_dir>/tokenizer-<key>.json``."""
    return Path(cache_dir) / f"tokenizer-{key}.json"


def _train(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                        show_progress=False)
    tokenizer.train_from_iterator((t for t in texts if t), trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def load_tokenizer(path) -> PreTrainedTokenizerFast:
    """A tokenizer file written by :func:`train_or_load_tokenizer`, with its special tokens named."""
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), **_NAMED)
    if tokenizer.pad_token_id != 0:
        raise ValueError(f"{path}: [PAD] has id {tokenizer.pad_token_id}, expected 0")
    return tokenizer


def train_or_load_tokenizer(texts: list[str], vocab_size: int, cache_dir, key: str) -> PreTrainedTokenizerFast:
    """The tokenizer stored as ``<cache_dir>/tokenizer-<key>.json``, trained on ``texts`` first if it is missing.

    Normalisation: BERT's (lower case, accents and control characters removed, CJK split); pre-tokenisation:
    whitespace and punctuation; model: WordPiece of at most ``vocab_size`` entries (the trainer keeps every
    character of the corpus, so a corpus with a large alphabet may exceed it), special tokens
    ``[PAD]=0, [UNK], [CLS], [SEP], [MASK]``; every text is encoded as ``[CLS] text [SEP]``.
    ``key`` must change whenever ``texts`` or ``vocab_size`` do.
    """
    path = tokenizer_path(cache_dir, key)
    if path.is_file():
        try:
            return load_tokenizer(path)
        except Exception as exc:  # a damaged file is trained again rather than trusted
            logger.warning("%s cannot be loaded (%s); training the tokenizer again", path, exc)
    corpus = [t for t in texts if t]
    if not corpus:
        raise ValueError("no text to train the tokenizer on: every item and user text is empty")
    start = time.perf_counter()
    tokenizer = _train(corpus, vocab_size)
    write_text_atomic(path, tokenizer.to_str())
    logger.info("tokenizer: %d entries trained on %d texts in %.1f s -> %s", tokenizer.get_vocab_size(),
                len(corpus), time.perf_counter() - start, path)
    # reloaded from the file, so the object returned now and in every later run is the same
    return load_tokenizer(path)


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both int64 ``[N, L]``: truncated to ``max_length`` tokens (with
    ``[CLS]``/``[SEP]``) and padded with ``[PAD]`` to the longest of the batch (``L <= max_length``)."""
    if not texts:
        empty = torch.zeros(0, 0, dtype=torch.long)
        return empty, empty.clone()
    out = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    return out["input_ids"].long(), out["attention_mask"].long()
