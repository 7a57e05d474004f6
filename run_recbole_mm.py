#!/usr/bin/env python
"""Train and evaluate a recommender: ``python run_recbole_mm.py --model=LightGCN --dataset=amazon-demo``.

See ``python run_recbole_mm.py --help`` and the README for every option.
"""

import sys

from recbole_mmfusion.cli import main

if __name__ == "__main__":
    sys.exit(main())
