"""Detection metrics as pure array functions (no files, no printing).

* :mod:`~rfo_bench.metrics.coco_eval`: COCO bbox AP/AR, bit-identical to pycocotools, keeping the
  per-image matching.
* :mod:`~rfo_bench.metrics.froc`: FROC of the object-CXR / RFO Bench protocol (reference and corrected).
* :mod:`~rfo_bench.metrics.auroc`: image-level AUROC, weighted for the bootstrap.
* :mod:`~rfo_bench.metrics.bootstrap`: image / patient resampling and re-aggregation of the above.
"""
