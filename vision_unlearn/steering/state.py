"""The steering state and its fitting settings: typed, frozen, small enough to save alone."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from torch import Tensor

from toolkit_core.errors import UserInputError


@dataclass(frozen=True)
class SteeringFit:
    """How a steering state is fitted.

    Attributes:
        rank: number of erasure directions ``k``; 0 uses the whole activation space.
        ridge: ridge penalty of the gate detector (on standardised features, ``> 0``).
        false_gate_rate: share of retain calibration inputs allowed to open the gate (``[0, 1)``).
        gate_full_quantile: forget-score quantile at which the gate is fully open (``[0, 1]``).
        target_response: ``"unknown"``: the target is the mean activation of the unknown inputs;
            ``"abstain"``: that mean moved to the nearest point where the linear classifier gives
            equal logits (:func:`~vision_unlearn.steering.abstain_prototype`), so erased inputs get a
            uniform prediction.
            Needs a block whose pooled output is the classifier input (``layer4``, ``norm``).
        granularity: ``"image"``: one gate per input from the pooled activation; ``"position"``: one
            gate per position / token from its own activation vector (detectors; see
            :mod:`vision_unlearn.steering`).
        gate_dilation: with a position gate on ``[B, C, H, W]`` maps, every cell takes the largest
            gate within this many cells (a max filter), so that an object whose cells open the gate
            only in part is erased as a whole. 0 = off.
        forget_box_scale: with a position gate, the positive cells are those of the forget boxes
            scaled by this factor about their centres (the central part carries the object; the
            corners of a box around a thin or round object are background). 1 = whole boxes.
    """

    rank: int = 0
    ridge: float = 0.01
    false_gate_rate: float = 0.01
    gate_full_quantile: float = 0.1
    target_response: Literal["unknown", "abstain"] = "unknown"
    granularity: Literal["image", "position"] = "image"
    gate_dilation: int = 0
    forget_box_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise UserInputError("rank must be >= 0 (0 = the whole activation space)", field="rank", value=self.rank)
        if not self.ridge > 0:
            raise UserInputError("ridge must be > 0", field="ridge", value=self.ridge)
        if not 0.0 <= self.false_gate_rate < 1.0:
            raise UserInputError("false_gate_rate must lie in [0, 1)", field="false_gate_rate",
                                 value=self.false_gate_rate)
        if not 0.0 <= self.gate_full_quantile <= 1.0:
            raise UserInputError("gate_full_quantile must lie in [0, 1]", field="gate_full_quantile",
                                 value=self.gate_full_quantile)
        if self.target_response not in ("unknown", "abstain"):
            raise UserInputError("target_response must be 'unknown' or 'abstain'", field="target_response",
                                 value=self.target_response)
        if self.granularity not in ("image", "position"):
            raise UserInputError("granularity must be 'image' or 'position'", field="granularity",
                                 value=self.granularity)
        if not 0.0 < self.forget_box_scale <= 1.0:
            raise UserInputError("forget_box_scale must lie in (0, 1]", field="forget_box_scale",
                                 value=self.forget_box_scale)
        if self.gate_dilation < 0:
            raise UserInputError("gate_dilation must be >= 0 (cells)", field="gate_dilation", value=self.gate_dilation)


@dataclass(frozen=True)
class SteeringState:
    """Everything a steering hook needs; small, saved alone (:func:`~vision_unlearn.steering.save_steering`).

    Attributes:
        layer: the hooked module's name in ``model.named_modules()``.
        strength: ``lambda``; 1 moves gated activations fully onto the target within ``U``.
        basis: ``[C, k]`` orthonormal erasure directions; ``[C, 0]`` means the whole space.
        target_mean: ``[C]`` pooled mean activation of the unknown inputs.
        feature_mean: ``[C]`` standardisation mean of the gate detector.
        feature_scale: ``[C]`` standardisation scale (> 0).
        detector_weight: ``[C]`` ridge weights on standardised features.
        detector_bias: detector intercept.
        gate_low: score at and below which the gate is 0.
        gate_high: score at and above which the gate is 1 (``>= gate_low``).
        fit: the fitting settings (for records).
    """

    layer: str
    strength: float
    basis: Tensor
    target_mean: Tensor
    feature_mean: Tensor
    feature_scale: Tensor
    detector_weight: Tensor
    detector_bias: float
    gate_low: float
    gate_high: float
    fit: SteeringFit

    @property
    def channels(self) -> int:
        return int(self.target_mean.shape[0])

    def tensors(self) -> dict[str, Tensor]:
        """The tensors of the state (float32, CPU, contiguous)."""
        names = ("basis", "target_mean", "feature_mean", "feature_scale", "detector_weight")
        return {n: getattr(self, n).detach().float().cpu().contiguous() for n in names}

    def scalars(self) -> dict[str, Any]:
        """The plain values of the state (JSON-serialisable)."""
        return {"layer": self.layer, "strength": self.strength, "detector_bias": self.detector_bias,
                "gate_low": self.gate_low, "gate_high": self.gate_high, "fit": asdict(self.fit)}

    def with_strength(self, strength: float) -> SteeringState:
        """A copy with another ``lambda``."""
        return SteeringState(**{**self.__dict__, "strength": float(strength)})

    @classmethod
    def from_parts(cls, tensors: dict[str, Tensor], scalars: dict[str, Any]) -> SteeringState:
        """Inverse of :meth:`tensors` + :meth:`scalars`."""
        return cls(layer=str(scalars["layer"]), strength=float(scalars["strength"]),
                   basis=tensors["basis"], target_mean=tensors["target_mean"],
                   feature_mean=tensors["feature_mean"], feature_scale=tensors["feature_scale"],
                   detector_weight=tensors["detector_weight"], detector_bias=float(scalars["detector_bias"]),
                   gate_low=float(scalars["gate_low"]), gate_high=float(scalars["gate_high"]),
                   fit=SteeringFit(**scalars["fit"]))
