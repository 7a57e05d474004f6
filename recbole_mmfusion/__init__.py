"""recbole-mmfusion: multimodal recommendation on Amazon review data as a RecBole plugin.

Importing the package applies the RecBole compatibility patches (:mod:`recbole_mmfusion.compat`) once.
"""

from recbole_mmfusion import compat as _compat

_compat.apply()

__version__ = "0.1.0"
