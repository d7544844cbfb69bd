"""CPU benchmark of detector unlearning: YOLOv8n on the toy detection set, methods vs retrain.

Trains an original YOLOv8n (128 px, 240 toy images, 3 classes), retrains it on the retain data of
each forget request, and runs the registered methods from the original weights:

* ``class:clamp`` - stop detecting one class (its boxes are removed; their images stay as background);
* ``images:0.1`` - 10 % of the pseudo patients withdraw, all their images leave the model.

Writes ``results.json``, ``results.md`` and ``results.png`` into ``--out``. Usage::

    .venv/bin/python benchmarks/bench_unlearn_yolo.py --out runs/yolo_bench --seeds 0 --threads 1

It is ``vision-unlearn benchmark --model yolo:yolov8n.yaml`` and accepts every option of
``vision-unlearn benchmark --help`` (``--forget`` repeated per request, ``--seeds 0-2``,
``--sweep``, ``--merge-results``).
"""

from __future__ import annotations

import sys

from rfo_toolkit.cli import vision_unlearn_main

if __name__ == "__main__":
    raise SystemExit(vision_unlearn_main(["benchmark", "--model", "yolo:yolov8n.yaml", *sys.argv[1:]]))
