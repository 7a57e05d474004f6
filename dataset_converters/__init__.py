"""Convert Amazon review data (2014, 2018 and 2023 releases) into RecBole atomic files.

>>> from dataset_converters import convert
>>> result = convert(["reviews.jsonl.gz"], meta=["meta.jsonl.gz"], out_dir="dataset",
...                  dataset="amazon-demo", k_core=5)                      # doctest: +SKIP
>>> result.n_users, result.n_items, result.n_interactions                # doctest: +SKIP

The same is available on the command line: ``python -m dataset_converters convert --help``.
"""

from .issues import ConversionError
from .pipeline import ConversionResult, convert

__all__ = ["convert", "ConversionError", "ConversionResult"]
