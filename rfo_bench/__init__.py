"""RFO benchmark: loaders, detector baselines and a COCO + FROC + AUROC evaluator for retained foreign objects.

This package is also the home of what the three packages share: the user-error type
(:mod:`toolkit_core.errors`), image / DICOM / volume I/O (:mod:`rfo_bench.io`), offline set-up of
third-party libraries (:mod:`toolkit_core.offline`) and the CLI error convention (:mod:`toolkit_core.cli_support`).
"""

from __future__ import annotations

__version__ = "0.1.0"
