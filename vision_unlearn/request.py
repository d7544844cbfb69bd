"""One deletion request, one road: :class:`UnlearnRequest` -> :func:`run_request` -> :class:`UnlearnResult`.

The road, forward only, for both model families:

1. the request is checked when it is made (method, config fields, the flags of its model family),
   before any data is read;
2. the outputs are checked writable (and not overwritten without ``force``, the CLI's ``--overwrite``);
3. the family's run reads model and data, resolves the forget request, runs the method through
   :func:`vision_unlearn.run.run_method`, evaluates before/after and writes the unlearned model and
   the audit record: :func:`vision_unlearn.classifier_run.run_classifier_unlearning` (timm, from a
   model file written by ``vision-unlearn train``) or
   :func:`vision_unlearn.detection_run.run_detection_unlearning` (``yolo:PATH_OR_YAML``);
4. ``metrics.json`` (the summary) is written and returned.

``vision-unlearn run`` only parses its flags into an :class:`UnlearnRequest`. In Python::

    from vision_unlearn import UnlearnRequest, unlearn
    result = unlearn(UnlearnRequest(model="yolo:best.pt", data="train.json", forget="class:needle",
                                    method="ofmu", out="runs/u"))
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from toolkit_core.errors import UserInputError

DETECTOR_PREFIX = "yolo:"
"""A model text starting with this names an Ultralytics detector (checkpoint or model yaml)."""

OUTPUTS = ("unlearned.pt", "audit.json", "metrics.json")
"""Files every run writes into ``out``."""

_CLASSIFIER_ONLY = ("dataset", "resume", "checkpoint_every")
_DETECTOR_ONLY = ("data", "test_data", "heldout_data", "image_size", "in_chans", "groups")


@dataclass(frozen=True, kw_only=True)
class UnlearnRequest:
    """Everything one unlearning run needs; checked when made.

    Attributes:
        model: a classifier model file written by ``vision-unlearn train``, or ``yolo:PATH_OR_YAML``
            (a local Ultralytics detection checkpoint, or a model yaml for an untrained detector).
        forget: the forget request (classifier: ``class:NAME``, ``ids:FILE``, ``patient:ID``,
            ``patients:FILE``, ``random:F``; detector: ``class:NAME``, ``images:FILE``, ``patient:ID``,
            ``patients:FILE``, ``instances:FILE``).
        method: registered method name (:func:`vision_unlearn.api.list_unlearners`).
        out: output directory (``unlearned.pt``, ``audit.json``, ``metrics.json``, ...).
        config: the method's config fields the user chose (a detector run lays them over the request
            kind's preset, :func:`~vision_unlearn.detection_presets.run_preset`).
        config_source: where ``config`` came from (a file, ``--set``), named in its errors.
        seed: seed of data order, random labels, ``random:F`` requests and the held-out split.
        device: torch device.
        evaluate: compute the before/after metrics.
        progress: show a progress bar.
        force: overwrite existing outputs.
        dataset: classifier: the dataset (default: the one the model file names).
        resume: classifier: continue from ``out/run.ckpt``.
        checkpoint_every: classifier: also checkpoint every N steps (0: at epoch ends).
        data: detector: the training data (a dataset path or ``toy:N``); required for detectors.
        test_data: detector: held-out data for the metrics (default: split some off ``data``).
        heldout_data: detector: other unseen images, for ``forget_loss_ceiling="heldout"``.
        image_size: detector: network input side (default: the checkpoint's training size).
        in_chans: detector: channels of a yaml model (1 when not given).
        groups: detector: the parameter groups the method may update (default: the preset's).

    Raises:
        UserInputError: an unknown method, bad config fields, a missing or foreign field for the
            model family (naming the field).
    """

    model: str
    forget: str
    method: str
    out: Path
    config: Mapping[str, Any] = field(default_factory=dict)
    config_source: str | None = None
    seed: int = 0
    device: str = "cpu"
    evaluate: bool = True
    progress: bool = False
    force: bool = False
    dataset: str | None = None
    resume: bool = False
    checkpoint_every: int = 0
    data: str | None = None
    test_data: str | None = None
    heldout_data: str | None = None
    image_size: int | None = None
    in_chans: int | None = None
    groups: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        from vision_unlearn.api import config_class_of, config_from_dict

        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))
        if self.groups is not None:
            object.__setattr__(self, "groups", tuple(self.groups))
        if not self.model:
            raise UserInputError("name the model (a classifier model file, or yolo:PATH_OR_YAML)", field="model")
        if not self.forget:
            raise UserInputError("give a forget request", field="forget")
        config_from_dict(config_class_of(self.method), dict(self.config),
                         source=self.config_source or f"method {self.method}")
        foreign = _DETECTOR_ONLY if self.family == "classifier" else _CLASSIFIER_ONLY
        for name in foreign:
            value = getattr(self, name)
            if value is not None and value is not False and value != 0:
                raise UserInputError(f"this field is for {'detectors' if self.family == 'classifier' else 'classifiers'}",
                                     field=name, value=value)
        if self.family == "detector":
            if len(self.model) == len(DETECTOR_PREFIX):
                raise UserInputError("expected yolo:PATH_OR_YAML", field="model", value=self.model)
            if not self.data:
                raise UserInputError("a detector run needs its training data (a dataset path or toy:N)", field="data")

    @property
    def family(self) -> Literal["classifier", "detector"]:
        """``"detector"`` for ``yolo:...`` models, ``"classifier"`` otherwise."""
        return "detector" if self.model.startswith(DETECTOR_PREFIX) else "classifier"

    @property
    def outputs(self) -> list[Path]:
        return [self.out / name for name in OUTPUTS]


@dataclass(frozen=True)
class UnlearnResult:
    """What a run wrote and measured.

    Attributes:
        summary: what ``metrics.json`` holds (method, request, metrics, costs, ...).
        checkpoint: the unlearned model file.
        audit: the audit record.
        notes: sentences the user should read (e.g. how test images were chosen).
    """

    summary: Mapping[str, Any]
    checkpoint: Path
    audit: Path
    notes: tuple[str, ...] = ()


def refuse_overwrite(paths: list[Path], force: bool, resume: bool = False) -> None:
    """Fail before any computation when an output cannot be written, or exists without ``force``/``resume``."""
    from toolkit_core.output_dirs import require_writable

    for path in paths:
        require_writable(path, is_dir=False)
    if force or resume:
        return
    for path in paths:
        if path.exists():
            raise UserInputError("output exists (use --overwrite to replace it, or --resume to continue)", file=path)


def read_config_fields(config_file: str | os.PathLike[str] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The method fields of a YAML file (a mapping) with ``overrides`` on top.

    Raises:
        UserInputError: a missing file, invalid YAML, or YAML that is not a mapping (naming the file).
    """
    import yaml

    data: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise UserInputError("config file not found", file=path) from None
        except yaml.YAMLError as err:
            raise UserInputError(f"not valid YAML: {err}", file=path) from None
        if not isinstance(loaded, dict):
            raise UserInputError("a config file must hold a mapping", file=path)
        data.update(loaded)
    data.update(overrides)
    return data
