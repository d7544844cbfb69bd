"""CPU benchmark of detector unlearning: YOLOv8n on the toy detection set, methods vs retrain.

Trains an original YOLOv8n (128 px, 240 toy images, 3 classes), retrains it on the retain data of
each forget request, and runs the registered methods from the original weights:

* ``class:clamp`` - stop detecting one class (its boxes are removed; their images stay as background);
* ``images:0.1`` - 10 % of the pseudo patients withdraw, all their images leave the model.

Writes ``results.json``, ``results.md`` and ``results.png`` into ``--out``. Usage::

    .venv/bin/python benchmarks/bench_unlearn_yolo.py --out runs/yolo_bench --seeds 0 --threads 1

Every option of ``python -m vision_unlearn.detection_benchmark benchmark --help`` is accepted.
"""

from __future__ import annotations

import shlex
import sys

from vision_unlearn.detection_benchmark import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    command = "python benchmarks/bench_unlearn_yolo.py " + shlex.join(argv)
    raise SystemExit(main(["benchmark", *argv, "--command-text", command]))
