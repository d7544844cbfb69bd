"""Optional dependencies: which pip extra of ``rfo-toolkit`` provides which importable module.

``pip install rfo-toolkit`` (no extra) reads, validates, converts, splits and evaluates datasets, runs
the physics generator and unlearns classifiers. The heavy or differently licensed stacks are extras
(the same groups as ``[project.optional-dependencies]`` in ``pyproject.toml``):

* ``[yolo]`` — Ultralytics (AGPL-3.0): YOLO training, prediction and unlearning;
* ``[detectors]`` — albumentations: training and prediction of the torchvision detectors;
* ``[diffusion]`` — diffusers: the diffusion generator (training, sampling, inpainting);
* ``[pretrained]`` — transformers: the text encoder of pretrained Stable Diffusion / RoentGen pipelines;
* ``[all]`` — all of the above.

The libraries import these packages lazily, inside the function that uses them, so a missing one
surfaces as a :class:`ModuleNotFoundError` only when that job runs; :func:`missing_extra_message`
turns it into the one line the CLI prints (see :mod:`toolkit_core.cli_support`).
"""

from __future__ import annotations

from dataclasses import dataclass

PACKAGE = "rfo-toolkit"
"""The distribution name users install (``pip install 'rfo-toolkit[yolo]'``)."""


@dataclass(frozen=True)
class OptionalDependency:
    """One optional third-party package.

    Attributes:
        module: its top-level import name (``ultralytics``).
        distribution: its name on PyPI (what ``pip`` installs).
        extra: the ``rfo-toolkit`` extra that installs it.
    """

    module: str
    distribution: str
    extra: str


OPTIONAL_DEPENDENCIES: dict[str, OptionalDependency] = {
    dep.module: dep
    for dep in (
        OptionalDependency("ultralytics", "ultralytics", "yolo"),
        OptionalDependency("albumentations", "albumentations", "detectors"),
        OptionalDependency("diffusers", "diffusers", "diffusion"),
        OptionalDependency("transformers", "transformers", "pretrained"),
    )
}
"""Top-level import name -> the optional dependency that provides it (keep in step with pyproject.toml)."""


def install_hint(extra: str) -> str:
    """The pip command that installs one extra, quoted for a POSIX shell."""
    return f"pip install '{PACKAGE}[{extra}]'"


def missing_extra_message(err: BaseException, command: str | None = None) -> str | None:
    """The one-line message for a missing optional dependency, or ``None`` when ``err`` is not one.

    Only a :class:`ModuleNotFoundError` for the *top-level* package of an optional dependency counts:
    a missing sub-module (``ultralytics.foo``) means a broken or incompatible installation, and a
    missing package that an optional dependency itself needs is that package's problem; both keep
    their traceback.

    Args:
        err: the exception a command raised.
        command: the command as the user typed it (``rfo-bench train --model yolov8n``), quoted in
            the message; without it the message says "this command".

    Returns:
        e.g. ``"`rfo-bench train --model yolov8n` needs the optional dependency ultralytics:
        pip install 'rfo-toolkit[yolo]'"``, or ``None``.
    """
    if not isinstance(err, ModuleNotFoundError) or not err.name:
        return None
    dep = OPTIONAL_DEPENDENCIES.get(err.name)
    if dep is None:
        return None
    who = f"`{' '.join(command.split())}`" if command and command.strip() else "this command"
    return f"{who} needs the optional dependency {dep.distribution}: {install_hint(dep.extra)}"
