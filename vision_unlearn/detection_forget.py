"""Forget requests for detectors: which images and which *boxes* must be forgotten.

A detection request is written as ``KIND:VALUE``:

======================  ==========================================================================
``class:NAME``          every box of one class (``NAME`` a class name or index): stop detecting it
``images:FILE``         every image listed in a text file (sample ids = stored file names), with
                        all its boxes: e.g. the radiographs of a patient who withdrew consent
``patient:ID``          every image of one patient (``ID`` may be comma separated)
``patients:FILE``       every image of the patients listed in a file
``instances:FILE``      single annotated objects (instance ids = annotation ids) that were wrong;
                        the rest of each image is kept
======================  ==========================================================================

Files list one id per line; blank lines and ``#`` comments are ignored (the format of
:func:`vision_unlearn.forget.read_id_file`). Parsing, the id lists and the class lookup are shared with
classification requests (:class:`vision_unlearn.forget.ForgetRequestBase`); what differs is the kinds
and that a detector forgets boxes, not only whole samples.

What "forget" and "retain" mean for a detector (:class:`DetectionForgetSplit`):

* the **forget stream** holds the images that contain something to forget, with *only the boxes to
  forget* as targets (gradient ascent or relabelling act on exactly those objects);
* the **retain stream** holds every other training image with all its boxes and, for class and
  instance requests, also the images that contained forget boxes *with those boxes removed*: there
  the model learns to see background. This is also the training set of the retrained reference
  model, i.e. the model that never saw the forgotten annotations. For image requests the forget
  images leave the retain stream entirely.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from toolkit_core.errors import UserInputError
from vision_unlearn.adapters.yolo_data import DetectionData
from vision_unlearn.forget import ForgetRequestBase, class_index

__all__ = [
    "KINDS",
    "DetectionForgetKind",
    "DetectionForgetRequest",
    "DetectionForgetSplit",
    "class_index",
    "parse_detection_forget",
    "resolve_detection_forget",
]

logger = logging.getLogger(__name__)

DetectionForgetKind = Literal["class", "images", "patient", "patients", "instances"]
KINDS: tuple[str, ...] = ("class", "images", "patient", "patients", "instances")


@dataclass(frozen=True)
class DetectionForgetRequest(ForgetRequestBase):
    """A parsed detection request (see the module docstring for the syntax).

    Unlike a classification request (:class:`vision_unlearn.forget.ForgetRequest`) it may name whole
    ``images`` or single boxes (``instances``) and has no ``random`` kind.

    Attributes:
        kind: ``class``, ``images``, ``patient``, ``patients`` or ``instances``.
        value: the text after the colon.
    """

    kind: DetectionForgetKind
    kinds: ClassVar[tuple[str, ...]] = KINDS

    @property
    def removes_images(self) -> bool:
        """True when whole images leave the training set (image and patient requests)."""
        return self.kind in ("images", "patient", "patients")


def parse_detection_forget(text: str) -> DetectionForgetRequest:
    """Parse ``KIND:VALUE`` (:meth:`~vision_unlearn.forget.ForgetRequestBase.parse`).

    Raises:
        UserInputError: unknown kind or missing value.
    """
    return DetectionForgetRequest.parse(text)


@dataclass(frozen=True)
class DetectionForgetSplit:
    """Which images and boxes of a training split are forgotten.

    Attributes:
        request: the request it came from.
        forget_boxes: ``bool [M]`` over the split's boxes: the boxes to forget (for image requests:
            every box of the forget images).
        forget_images: ``int64 [F]`` sorted rows of the images holding something to forget
            (for image requests: the forget images, with or without boxes).
        retain_images: ``int64 [R]`` sorted rows of the images in the retain stream.
        forgotten_classes: class indices removed entirely (class requests), else empty.
    """

    request: DetectionForgetRequest
    forget_boxes: torch.Tensor
    forget_images: np.ndarray
    retain_images: np.ndarray
    forgotten_classes: tuple[int, ...] = ()

    def forget_data(self, data: DetectionData) -> DetectionData:
        """The forget images with only their forget boxes."""
        return data.select(self.forget_images, keep_boxes=self.forget_boxes)

    def retain_data(self, data: DetectionData) -> DetectionData:
        """The retain images with every box that is not forgotten."""
        return data.select(self.retain_images, keep_boxes=~self.forget_boxes)

    def summary(self) -> dict[str, object]:
        return {"request": str(self.request), "forget_images": int(self.forget_images.size),
                "forget_boxes": int(self.forget_boxes.sum()), "retain_images": int(self.retain_images.size),
                "forgotten_classes": list(self.forgotten_classes)}


def resolve_detection_forget(request: DetectionForgetRequest | str, data: DetectionData,
                             root: str | os.PathLike[str] | None = None) -> DetectionForgetSplit:
    """Split a training set into what to forget and what to retain.

    Args:
        request: a :class:`DetectionForgetRequest` or its text form.
        data: the training split.
        root: directory that relative id-file paths are resolved against.

    Raises:
        UserInputError: a class not in the model, image/patient/instance ids that are not in the
            data (the first unknown id is named), an empty forget set, or a request that would
            leave no retain image.
    """
    req = parse_detection_forget(request) if isinstance(request, str) else request
    n, m = len(data), data.num_boxes
    source: str | None = None
    forgotten: tuple[int, ...] = ()
    image_mask = np.zeros(n, dtype=bool)
    if req.kind == "class":
        cls = class_index(req.value, data.class_names)
        forgotten = (cls,)
        box_mask = data.labels == cls
    elif req.kind == "instances":
        wanted, source = req.listed_ids(root)
        known = set(data.instance_ids)
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise UserInputError(f"{len(unknown)} instance id(s) do not exist in the training annotations",
                                 file=source, field="forget", value=unknown[0])
        wanted_set = set(wanted)
        box_mask = torch.tensor([i in wanted_set for i in data.instance_ids], dtype=torch.bool).reshape(m)
    else:
        wanted, source = req.listed_ids(root)
        pool = list(data.sample_ids) if req.kind == "images" else list(data.patient_ids)
        known = set(pool)
        unknown = [w for w in wanted if w not in known]
        if unknown:
            what = "image ids" if req.kind == "images" else "patient ids"
            raise UserInputError(f"{len(unknown)} {what} are not in the training data", file=source,
                                 field="forget", value=unknown[0])
        wanted_set = set(wanted)
        image_mask = np.fromiter((p in wanted_set for p in pool), dtype=bool, count=n)
        box_mask = torch.from_numpy(image_mask)[data.box_image] if m else torch.zeros(0, dtype=torch.bool)
    if not req.removes_images:
        owners = data.box_image[box_mask].numpy()
        image_mask[owners] = True
    forget_images = np.flatnonzero(image_mask).astype(np.int64)
    retain_images = (np.flatnonzero(~image_mask) if req.removes_images else np.arange(n)).astype(np.int64)
    if forget_images.size == 0:
        raise UserInputError("the forget set is empty (no image or box matches the request)", field="forget",
                             value=str(req))
    if retain_images.size == 0:
        raise UserInputError("the request covers every training image; nothing would be retained", field="forget",
                             value=str(req))
    split = DetectionForgetSplit(request=req, forget_boxes=box_mask.to(torch.bool), forget_images=forget_images,
                                 retain_images=retain_images, forgotten_classes=forgotten)
    logger.info("forget request %s: %s", req, split.summary())
    return split
