"""An incremental evaluator in the manner of torchmetrics: ``update`` per batch, ``compute`` at the end.

The COCO, FROC and AUROC numbers are not sums over batches: FROC sorts every prediction of every
image together, AP does so per category, and the bootstrap resamples images. So, like torchmetrics'
``MeanAveragePrecision``, :class:`DetectionEvaluator` keeps the batches and evaluates them once in
:meth:`~DetectionEvaluator.compute`, with :func:`rfo_bench.evaluate.evaluate_detailed`: the report is
the one the same data gives from files (same image order, same prediction order, same bootstrap draws).

Two ways to feed it::

    evaluator = DetectionEvaluator(EvalConfig(bootstrap=0))            # targets arrive with the batches
    evaluator.update([{"boxes": b, "scores": s, "labels": l}], [{"boxes": gb, "labels": gl}])

    evaluator = DetectionEvaluator(ground_truth="test.json")          # a fixed ground truth
    evaluator.update(coco_results_of_a_batch)                           # or {image_id: arrays}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.eval_config import EvalConfig, Evaluation
from rfo_bench.evaluate import evaluate_detailed
from rfo_bench.ground_truth import (
    CategoryTable,
    GroundTruthSource,
    category_table,
    read_ground_truth,
    records_from_targets,
)
from rfo_bench.io.records import DetectionDataset, ImageRecord
from rfo_bench.predictions import (
    MEMORY,
    Predictions,
    PredictionSource,
    concatenate_predictions,
    predictions_from_arrays,
    read_predictions,
)
from toolkit_core.errors import UserInputError


class DetectionEvaluator:
    """Accumulates predictions (and targets) batch by batch; :meth:`compute` gives the evaluation report.

    Args:
        config: evaluation settings (default :class:`EvalConfig`).
        ground_truth: a fixed ground truth (path, COCO dict, targets or dataset); None = targets come
            with each :meth:`update`.
        categories: category table of targets given to :meth:`update` (default: from the labels seen).
        box_format: of array boxes: ``xyxy`` (torchmetrics' default) or ``xywh`` (COCO).
    """

    def __init__(self, config: EvalConfig | None = None, *, ground_truth: GroundTruthSource | None = None,
                 categories: CategoryTable = None, box_format: str = "xyxy") -> None:
        self.config = config or EvalConfig()
        self.box_format = box_format
        self.categories = categories
        self.ground_truth = None if ground_truth is None else read_ground_truth(
            ground_truth, categories=categories, box_format=box_format)
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen (the fixed ground truth, if any, stays)."""
        self._records: list[ImageRecord] = []
        self._batches: list[Predictions] = []  # indices into the images of the fixed ground truth or of _records

    @property
    def num_images(self) -> int:
        """Images seen so far (those of the fixed ground truth, or the targets given)."""
        return len(self.ground_truth.images) if self.ground_truth is not None else len(self._records)

    def update(self, predictions: PredictionSource | Sequence[Mapping[str, Any]],
               targets: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add one batch.

        Args:
            predictions: with a fixed ground truth: COCO results (a list of dicts), per-image arrays
                by image id, or :class:`Predictions`. Without one: per-image arrays
                ``{"boxes", "scores", "labels"}`` (or ``points`` and ``scores``), aligned with ``targets``.
            targets: per image ``{"boxes", "labels"}`` (optional ``image_id``, ``file_name``,
                ``patient_id``); only without a fixed ground truth.

        Raises:
            UserInputError: targets given with a fixed ground truth or missing without one, a
                predictions list not aligned with the targets, or a malformed entry (named).
        """
        if self.ground_truth is not None:
            if targets is not None:
                raise UserInputError("this evaluator has a fixed ground truth: give predictions only",
                                     field="targets")
            self._batches.append(read_predictions(predictions, self.ground_truth, box_format=self.box_format))
            return
        if targets is None:
            raise UserInputError("give targets with each batch, or a ground_truth when creating the evaluator",
                                 field="targets")
        if not isinstance(predictions, Sequence) or len(predictions) != len(targets):
            raise UserInputError("predictions must be a list with one entry per target", file=MEMORY,
                                 field="predictions", value=len(predictions) if isinstance(predictions, Sequence)
                                 else type(predictions).__name__)
        first, number = len(self._records), len(self._batches)
        records = records_from_targets(targets, first_image_id=first + 1, box_format=self.box_format, offset=first)
        table = category_table(self.categories, [o.category_id for r in records for o in r.objects])
        if self.categories is not None:
            known = {c.id for c in table}
            for k, record in enumerate(records):
                unknown = [o.category_id for o in record.objects if o.category_id not in known]
                if unknown:
                    raise UserInputError("unknown category id; the categories are " + ", ".join(map(str, sorted(known))),
                                         file=MEMORY, field=f"targets[{first + k}].labels", value=unknown[0])
        # converted now (tensors leave the GPU with this batch); labels checked now against given categories,
        # else every label seen becomes a category at compute()
        part = predictions_from_arrays(predictions, DetectionDataset(Path("."), tuple(records), table, MEMORY),
                                       box_format=self.box_format, source=f"{MEMORY} batch {number}",
                                       check_categories=self.categories is not None)
        self._records += records
        self._batches.append(Predictions(part.image_index + first, part.score, part.points_xy, part.boxes_xywh,
                                         part.category_id, source=MEMORY))

    def _inputs(self) -> tuple[DetectionDataset, Predictions]:
        predictions = concatenate_predictions(self._batches)
        if self.ground_truth is not None:
            return self.ground_truth, predictions
        if not self._records:
            raise UserInputError("nothing to evaluate: call update() first")
        labels = [o.category_id for r in self._records for o in r.objects]
        if predictions.category_id is not None:  # a class detected but absent from the targets: no ground truth
            labels += np.unique(predictions.category_id).tolist()
        gt = DetectionDataset(Path("."), tuple(self._records), category_table(self.categories, labels), MEMORY)
        return gt, predictions

    def compute_detailed(self) -> Evaluation:
        """The :class:`~rfo_bench.evaluate.Evaluation` (report and the arrays behind the plots)."""
        gt, predictions = self._inputs()
        return evaluate_detailed(gt, predictions, self.config)

    def compute(self) -> dict[str, Any]:
        """The evaluation report (the dict :func:`rfo_bench.evaluate.evaluate` returns)."""
        return self.compute_detailed().report
