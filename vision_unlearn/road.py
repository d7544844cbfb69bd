"""The road of one deletion request: :class:`~vision_unlearn.request.UnlearnRequest` ->
:func:`run_request` -> the family's leg (:mod:`vision_unlearn.classifier_run` or
:mod:`vision_unlearn.detection_run`) -> :func:`~vision_unlearn.run.run_method` -> the loop ->
:class:`~vision_unlearn.request.UnlearnResult`. The request module only describes a request; this one
runs it (the legs import the request, so the dispatch lives above them)."""

from __future__ import annotations

import json

from vision_unlearn.request import UnlearnRequest, UnlearnResult, refuse_overwrite


def run_request(request: UnlearnRequest) -> UnlearnResult:
    """Run ``request`` along the road of the module docstring; write ``metrics.json``.

    Raises:
        UserInputError: outputs that exist (without ``force``/``resume``) or cannot be written, and
            every error of the family's run.
    """
    from toolkit_core.records import jsonable
    from toolkit_core.utils import atomic_write_bytes

    refuse_overwrite(request.outputs, request.force, request.resume)
    if request.family == "detector":
        from vision_unlearn.detection_run import run_detection_unlearning

        summary = run_detection_unlearning(request)
    else:
        from vision_unlearn.classifier_run import run_classifier_unlearning

        summary = run_classifier_unlearning(request)
    if summary is None:  # a non-main process of a distributed run writes nothing
        return UnlearnResult({}, request.out / "unlearned.pt", request.out / "audit.json")
    summary = jsonable({"method": request.method, "forget": request.forget, **summary})
    atomic_write_bytes(request.out / "metrics.json",
                       (json.dumps(summary, indent=2, allow_nan=False, default=str) + "\n").encode("utf-8"))
    return UnlearnResult(summary, request.out / "unlearned.pt", request.out / "audit.json",
                         tuple(summary.get("notes") or ()))
