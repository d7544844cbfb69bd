"""Create a method, run the loop, time it: the one place where a method runs.

Every road that unlearns (``vision-unlearn run`` for classifiers and detectors, both benchmarks,
the demo, :func:`vision_unlearn.unlearn`) and the training of an original model call
:func:`run_method`. It asks the method for its capabilities through the protocols of
:mod:`vision_unlearn.protocols`, never by name:

* :class:`~vision_unlearn.protocols.HeldoutAware`: given held-out samples, the method gets them
  before the run (:meth:`~vision_unlearn.protocols.HeldoutAware.attach_heldout`), and the run
  records the forget-loss ceiling it followed (:meth:`~vision_unlearn.protocols.HeldoutAware.ceiling_logs`);
* :class:`~vision_unlearn.protocols.TestTimeMethod`: the caller decides when its hooks go
  (:func:`detach_test_time_hooks`), because evaluating it needs them on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from vision_unlearn.api import create_unlearner
from vision_unlearn.distributed import SINGLE_PROCESS, DistContext
from vision_unlearn.loop import LoopResult, LoopSettings, run_loop
from vision_unlearn.protocols import (
    Batch,
    HeldoutAware,
    MethodConfig,
    ModelAdapter,
    TestTimeMethod,
    Unlearner,
)

CEILING_LOG = "loss_ceiling"
"""The key under which a :class:`~vision_unlearn.protocols.HeldoutAware` method logs its ceiling."""


@dataclass(frozen=True)
class MethodRun:
    """One method run: the fitted method, the loop's result and its cost.

    Attributes:
        method: the unlearner (a test-time method still has its hooks on the model).
        result: what the loop did (:class:`~vision_unlearn.loop.LoopResult`).
        seconds: wall-clock seconds of the run (method set-up included).
        cpu_seconds: CPU seconds of this process over the run (all threads), the fairer cost on a
            shared CPU where other jobs stretch wall time; not the GPU time on a CUDA device.
        ceiling: ``{"start", "end"}``: the forget-loss ceiling the first and the last step of a
            held-out-aware method followed (empty when it followed none).
    """

    method: Unlearner
    result: LoopResult
    seconds: float
    cpu_seconds: float
    ceiling: Mapping[str, float] = field(default_factory=dict)


def run_method(name: str, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None, *,
               config: MethodConfig | Mapping[str, Any] | None = None, settings: LoopSettings = LoopSettings(),
               heldout: Mapping[str, Tensor] | None = None, dist: DistContext = SINGLE_PROCESS) -> MethodRun:
    """Create method ``name`` from the registry with ``config``, run it on ``adapter``, time it.

    Args:
        name: registered method name (:func:`vision_unlearn.api.list_unlearners`).
        adapter: the model, holding the weights the method starts from.
        forget: the whole forget stream (``images``, ``labels``, ``index``, ...) or ``None``.
        retain: the whole retain stream or ``None``.
        config: the method's config (an instance, a mapping of its fields, or ``None`` for defaults).
        settings: seed, device, checkpoints and progress of the loop.
        heldout: samples the model never saw, handed to a :class:`~vision_unlearn.protocols.HeldoutAware`
            method (ignored by the others).
        dist: the process group (:func:`vision_unlearn.distributed.init_distributed`).

    Raises:
        UserInputError: unknown method, bad config, a missing stream (see :func:`~vision_unlearn.loop.run_loop`).
        TrainingDivergedError: non-finite loss or gradients.
    """
    method = create_unlearner(name, adapter, dict(config) if isinstance(config, Mapping) else config)
    aware = isinstance(method, HeldoutAware)
    if heldout is not None and aware:
        method.attach_heldout(heldout)
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run_loop(adapter, method, forget, retain, settings, dist)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    ceiling: dict[str, float] = {}
    end = method.ceiling_logs().get(CEILING_LOG) if aware else None
    if end is not None:
        ceiling = {"start": float(result.first_step_logs.get(CEILING_LOG, end)), "end": float(end)}
    return MethodRun(method, result, seconds, cpu_seconds, ceiling)


def detach_test_time_hooks(method: Any) -> bool:
    """Remove the hooks of a :class:`~vision_unlearn.protocols.TestTimeMethod` for good (the model is
    the plain one again); ``False`` for any other method."""
    if not isinstance(method, TestTimeMethod):
        return False
    method.detach()
    return True
