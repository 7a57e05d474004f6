"""How much the text vectors of MMFusion's pretrained text encoder differ across items: [CLS] against mean pooling.

    python benchmarks/text_pooling.py --dataset amazon-demo --config_files properties/model/MMFusion-cpu.yaml

Builds (or takes from the feature cache) the masked-LM-pretrained text encoder that ``feature_mode: cached``
uses for the dataset and settings given, encodes every item text with both poolings, and reports the mean
distance of the vectors to their centroid divided by their mean length (0 = every item gets the same vector).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from reporting import emit


def spread(vectors: np.ndarray) -> float:
    centred = vectors - vectors.mean(axis=0)
    return float(np.linalg.norm(centred, axis=1).mean() / np.linalg.norm(vectors, axis=1).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="amazon-demo")
    parser.add_argument("--config_files", nargs="*", default=["properties/model/MMFusion-cpu.yaml"])
    args = parser.parse_args()

    import recbole_mmfusion  # noqa: F401  (applies the RecBole patches)
    from recbole.data import create_dataset, data_preparation

    from recbole_mmfusion.config import MMConfig
    from recbole_mmfusion.datasets import prepare_dataset
    from recbole_mmfusion.modalities import load_modality_inputs
    from recbole_mmfusion.pretrain import encoder_init, tokenize

    config = MMConfig("MMFusion", args.dataset, config_file_list=args.config_files,
                      config_dict={"modalities": ["text"], "use_gpu": False})
    prepare_dataset(config)
    train, _, _ = data_preparation(config, create_dataset(config))
    inputs = load_modality_inputs(config, train._dataset)
    tokenizer, encoder, _ = encoder_init(config, inputs)
    texts = [t for t in inputs.item_text if t]
    ids, mask = tokenize(tokenizer, texts, config["text_max_length"])
    report = {"dataset": args.dataset, "items": len(texts)}
    for pooling in ("cls", "mean"):
        encoder.pooling = pooling
        report[f"spread_{pooling}"] = round(spread(encoder.encode(ids, mask).numpy()), 4)
    emit(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
