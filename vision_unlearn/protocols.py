"""The contracts every model adapter and every unlearning method fulfils.

Three small pieces keep methods independent of models and of the loop:

* :class:`ModelAdapter` wraps one model family (timm classifiers now, YOLO detectors later). It
  turns a :data:`Batch` into named losses, predicts, and says which parameters are trainable.
  Nothing model-specific leaks into a method.
* :class:`Unlearner` is one method. Most methods only say how the loss of one step differs from
  plain training (:meth:`Unlearner.compute_loss`); the loop (:mod:`vision_unlearn.loop`) does the
  backward pass and the optimizer step. A method whose step is not "one loss, one optimizer step"
  (OFMU's inner/outer bi-level step) sets ``owns_step = True`` and implements
  :meth:`Unlearner.owned_step`; the loop still owns schedules, checkpoints, logging and progress.
* :class:`MethodConfig` is the frozen dataclass every method's config extends. The optimisation
  fields it holds (epochs, learning rate, batch size, ...) are read by the loop; the method adds its
  own fields next to its code.

A :data:`Batch` is a mapping of named tensors. For classification it holds

* ``"images"``: ``Tensor[B, C, H, W]`` float32,
* ``"labels"``: ``Tensor[B]`` int64 class ids in ``[0, num_classes)``,
* ``"index"``: ``Tensor[B]`` int64 row numbers in the dataset the batch was drawn from.

A detection adapter adds its own keys (boxes, ...) and ignores the ones it does not use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

Batch = Mapping[str, Any]
"""Named tensors of one mini-batch (see the module docstring for the keys)."""

StreamName = Literal["forget", "retain"]
"""The two data streams an unlearning run draws from."""

FeatureHook = Callable[[str, Tensor], None]
"""Called with ``(layer_name, features)`` every forward pass while registered."""


@runtime_checkable
class ModelAdapter(Protocol):
    """One model family behind the interface every method uses.

    Optional hooks: an adapter whose model family needs its own forget objective provides them, and
    a method uses them when present (``isinstance(adapter, AscentLossAdapter)`` and the other
    capability protocols at the end of this module) and its generic code path otherwise, so every
    method keeps one code path. The YOLO adapter (:class:`vision_unlearn.adapters.yolo.YoloAdapter`)
    provides all three; the timm adapter none.

    * ``ascent_loss(batch) -> {"loss", ...}``: the bounded objective that gradient-ascent methods
      (``grad_ascent``, ``neggrad_plus``) raise on a forget batch instead of the training loss
      (detectors: the forget boxes' class terms on their anchors, clamped).
    * ``distillation_loss(batch, student, teacher, temperature, side, suppressed_classes=()) -> Tensor``:
      SCRUB's teacher-student divergence of the family's outputs (detectors: per anchor).
    * ``forget_only_classes(forget, retain) -> tuple[int, ...]``: classes present only in the forget
      stream (the teacher is made not to see them on retain data).

    Attributes:
        model: the wrapped ``torch.nn.Module`` (the loop moves it and saves it).
        module: the module :meth:`loss` calls: ``model`` itself, or the loop's
            ``DistributedDataParallel`` wrapper of it under ``torchrun``.
        num_classes: number of output classes (classifiers) or object categories (detectors).
    """

    model: nn.Module
    module: nn.Module
    num_classes: int

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """Losses on one batch.

        Returns:
            ``"loss"``: scalar mean training loss (always present); ``"per_sample"``: ``Tensor[B]``
            per-sample losses where the model family allows it; ``"logits"``: ``Tensor[B, K]`` for
            classifiers. Extra keys (loss components) are allowed.
        """
        ...

    def predict(self, images: Tensor) -> Tensor:
        """Model outputs for ``Tensor[B, C, H, W]`` images in eval mode, without gradients.

        Classifiers return logits ``Tensor[B, K]``; detectors return their own prediction format.
        """
        ...

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` pairs the methods may update, in a fixed order."""
        ...

    def parameter_groups(self) -> dict[str, list[str]]:
        """Named groups of trainable parameter names, e.g. ``{"backbone": [...], "head": [...]}``."""
        ...

    def add_feature_hook(self, hook: FeatureHook, layer: str | None = None) -> torch.utils.hooks.RemovableHandle:
        """Call ``hook(layer, features)`` on every forward pass; ``layer=None`` means the
        penultimate (pooled) features. Remove the hook through the returned handle."""
        ...

    def reset_parameters(self, seed: int) -> None:
        """Re-initialise every weight from scratch, reproducibly from ``seed`` (for ``retrain``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description (model name, constructor arguments) for records."""
        ...


@dataclass(frozen=True)
class MethodConfig:
    """Optimisation settings shared by every method; each method extends this dataclass.

    Attributes:
        epochs: passes over the stream named by the method's ``epoch_over``.
        lr: peak learning rate.
        batch_size: samples per batch of each stream (split across processes under DDP).
        optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: decoupled from nothing: plain L2 as in ``torch.optim``.
        schedule: ``"constant"`` or ``"cosine"`` (decays to 0 over the run).
        warmup_steps: linear warm-up length in optimizer steps.
        grad_clip_norm: clip the global gradient norm to this value (0 disables).
        freeze_norm_stats: keep batch-norm layers in eval mode during the run (normalise with the
            trained running statistics, never update them); see :func:`vision_unlearn.loop.train_mode`.
    """

    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 64
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip_norm: float = 0.0
    freeze_norm_stats: bool = False


@dataclass(frozen=True)
class StepOutput:
    """What one method step hands back to the loop.

    Attributes:
        loss: scalar tensor the loop back-propagates, or ``None`` when the method already updated
            the parameters itself (``owns_step``).
        logs: scalar values to log (floats), e.g. loss components or gradient norms.
    """

    loss: Tensor | None
    logs: Mapping[str, float] = field(default_factory=dict)


@dataclass
class StepState:
    """Where the loop is; passed to every method call.

    Attributes:
        step: optimizer steps already done in this run (0-based index of the current step).
        total_steps: optimizer steps the run will take.
        epoch: current epoch (0-based).
        lr: learning rate of the current step after the schedule.
        device: device the model and batches live on.
        generator: the run's random generator for method randomness (random labels, ...); its state
            is checkpointed so a resumed run draws the same numbers.
        all_reduce_mean: averages a list of tensors in place across processes (a no-op in a single
            process); methods that own their step use it on gradients they apply themselves.
        world_size: number of processes (1 without ``torchrun``).
    """

    step: int
    total_steps: int
    epoch: int
    lr: float
    device: torch.device
    generator: torch.Generator
    all_reduce_mean: Callable[[list[Tensor]], None] = field(default=lambda tensors: None)
    world_size: int = 1


@runtime_checkable
class Unlearner(Protocol):
    """One unlearning method (see :mod:`vision_unlearn.methods`).

    Class attributes:
        name: the registry name (equal to the method's file name).
        config_class: the method's frozen config dataclass (a :class:`MethodConfig` subclass).
        epoch_over: the stream one epoch passes over.
        needs: the streams a step draws from; the other stream is cycled.
        owns_step: ``True`` when the method updates the parameters itself in :meth:`owned_step`.
        from_scratch: ``True`` when the method starts from re-initialised weights (``retrain``, unless its
            config's ``init`` is ``current``: a reference fine-tuned from a pretrained start).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    epoch_over: ClassVar[StreamName]
    needs: ClassVar[frozenset[str]]
    owns_step: ClassVar[bool]
    from_scratch: ClassVar[bool]
    config: MethodConfig

    def setup(self, adapter: ModelAdapter, forget: Batch, retain: Batch, device: torch.device) -> None:
        """Prepare before the first step, from the *original* model (teacher copies, saliency
        masks). ``forget``/``retain`` hold the full streams (same keys as a batch)."""
        ...

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        """The loss of one step; the loop back-propagates it and steps the optimizer."""
        ...

    def before_optimizer_step(self, adapter: ModelAdapter, state: StepState) -> None:
        """Edit gradients after backward and before the optimizer step (e.g. a saliency mask)."""
        ...

    def owned_step(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                   state: StepState) -> StepOutput:
        """A step that computes its own gradients (only called when ``owns_step``).

        The method may move the parameters itself (e.g. OFMU's inner steps); it must leave the
        gradient of its final (outer) update in each trainable parameter's ``.grad``, averaged across
        processes with ``state.all_reduce_mean``. The loop then clips, checks for non-finite values
        and takes the optimizer step, so schedules, checkpoints and logging stay in one place.
        """
        ...

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values the method needs to resume (saved in checkpoints)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


# --- optional capabilities -------------------------------------------------------------------------------
# The harness asks ``isinstance(x, Capability)`` instead of testing method names or ``getattr(..., None)``.


@runtime_checkable
class AscentLossAdapter(Protocol):
    """An adapter with a bounded loss to ascend on forget data (detectors: the forget boxes' class
    terms on their anchors, clamped); methods fall back to ``log(1 - p)`` of the labels without it."""

    def ascent_loss(self, batch: Batch) -> dict[str, Tensor]:
        """``"loss"``: the scalar objective to maximise; further keys are diagnostics (e.g. ``"anchors"``)."""
        ...


@runtime_checkable
class DistillationAdapter(Protocol):
    """An adapter that distils a teacher into a student in its own output space (SCRUB)."""

    def distillation_loss(self, batch: Batch, student: nn.Module, teacher: nn.Module, temperature: float,
                          side: str, suppressed_classes: tuple[int, ...] = ()) -> Tensor:
        ...


@runtime_checkable
class ForgetOnlyClassesAdapter(Protocol):
    """An adapter that names the classes present only in the forget data (class requests on detectors)."""

    def forget_only_classes(self, forget: Any, retain: Any) -> tuple[int, ...]:
        ...


@runtime_checkable
class HeldoutAware(Protocol):
    """A method that measures its forget-loss ceiling on held-out samples the model never saw; the
    harness calls :meth:`attach_heldout` with them before the run (``forget_loss_ceiling="heldout"``)
    and reads the ceiling it followed from :meth:`ceiling_logs` after it."""

    def attach_heldout(self, stream: Mapping[str, Tensor]) -> None:
        ...

    def ceiling_logs(self) -> dict[str, float]:
        """``{"loss_ceiling": value}`` of the ceiling now followed; empty when it follows none."""
        ...


@runtime_checkable
class TestTimeMethod(Protocol):
    """A method that erases at test time through forward hooks and leaves the weights as they are
    (``steer``). The harness evaluates it twice, hooks on and hooks off (:meth:`hooks_disabled`), so a
    reversible output filter is reported as a filter; :meth:`detach` removes the hooks for good."""

    def hooks_disabled(self) -> AbstractContextManager[None]:
        ...

    def detach(self) -> None:
        ...
