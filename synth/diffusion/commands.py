"""``rfo-synth diffusion train | sample | eval | fit-refiner | refine``: the command group of the diffusion generator.

Flags are turned into the frozen configs of :mod:`synth.diffusion.train`, :mod:`.sample`,
:mod:`.pipelines` and :mod:`.qc` here and nowhere else. The grammar is :mod:`toolkit_core.cli_support`'s:
``--patch-size`` is the side of the object patches (crop geometry of the checkpoint, with
``--scale-groups`` the patch pixel sizes in mm of its scale groups), ``--imgsz`` an
image side a network works at, ``--batch`` the patches per step; ``sample``, ``eval`` and
``fit-extractor``, ``fit-refiner`` and ``refine`` refuse an existing output unless ``--overwrite``. ``train`` resumes a checkpoint
folder of this trainer (it never replaces one) and refuses any other non-empty folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from toolkit_core.cli_support import (
    add_batch,
    add_command,
    add_deprecated_alias,
    add_imgsz,
    add_output_options,
    add_runtime_options,
    set_threads,
)
from toolkit_core.errors import UserInputError
from toolkit_core.output_dirs import check_output_file, owned_output_dir, prepare_output_dir

PRESETS = ("cpu", "tiny", "medium", "base")
SAMPLE_TOOL = "rfo-synth diffusion sample"


def model_preset(name: str, channels: str | None = None):
    """The model configuration of a preset.

    ``tiny``: unit tests; ``cpu`` (1.0 M parameters, no attention, about 1 s per step of 16 patches on
    one CPU thread): half an hour to an hour on a laptop CPU; ``medium`` (3.1 M): a workstation CPU;
    ``base`` (18.5 M): a GPU. Every preset predicts ``v`` and draws the object layer (``residual``
    target) with the object mask as an input channel; see :mod:`synth.diffusion.model`.
    """
    from synth.diffusion.model import TINY_MODEL, ModelConfig

    if name == "tiny":
        config = TINY_MODEL
    elif name == "base":
        config = ModelConfig(block_out_channels=(64, 128, 128, 256), layers_per_block=2, attention_levels=2,
                             norm_groups=32)
    elif name == "medium":
        config = ModelConfig(block_out_channels=(32, 64, 64, 128), layers_per_block=1, attention_levels=1,
                             norm_groups=16)
    elif name == "cpu":
        config = ModelConfig()
    else:
        raise UserInputError(f"unknown preset; expected one of {PRESETS}", field="--preset", value=name)
    if channels:
        try:
            widths = tuple(int(v) for v in channels.split(","))
        except ValueError:
            raise UserInputError("expected comma-separated integers", field="--channels", value=channels) from None
        config = ModelConfig(**{**config.__dict__, "block_out_channels": widths})
    return config


def _cmd_train(args: argparse.Namespace) -> int:
    from synth.diffusion.patches import PatchSpec
    from synth.diffusion.train import TrainConfig, train

    set_threads(args.threads)
    config = TrainConfig(steps=args.steps, batch_size=args.batch, learning_rate=args.lr,
                         save_every=args.save_every, seed=args.seed, class_drop_prob=args.class_drop,
                         context_drop_prob=args.context_drop, ema_decay=args.ema_decay,
                         region_weight=args.region_weight)
    spec = PatchSpec(size_px=args.patch_size, context=args.context, mask_margin_px=args.margin,
                     scale_groups_mm_px=parse_scale_groups(args.scale_groups))
    result = train(args.data, args.out, config, model_preset(args.preset, args.channels), spec, device=args.device,
                   progress=not args.no_progress)
    print(json.dumps({"checkpoint": str(result.ckpt_dir), "step": result.step, "resumed_from": result.resumed_from,
                      "last_loss": result.last_loss, "seconds": round(result.seconds, 1),
                      "patches": result.num_patches}, indent=2))
    return 0


def _qc_scorer(args: argparse.Namespace):
    if not args.qc_checkpoint:
        return None
    from synth.diffusion.qc import ClassifierScorer, TimmModelSpec, TimmNetwork

    spec = TimmModelSpec(name=args.qc_model, checkpoint=args.qc_checkpoint)
    return ClassifierScorer(TimmNetwork(spec, need_classifier=True, device=args.device))


def _cmd_sample(args: argparse.Namespace) -> int:
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    set_threads(args.threads)
    out = prepare_output_dir(args.out, SAMPLE_TOOL, overwrite=args.overwrite)  # refused before any model loads
    with owned_output_dir(out, SAMPLE_TOOL, overwrite=args.overwrite):
        manifest = _sample(args, classes)
    print(json.dumps(manifest, indent=2))
    return 0


def _sample(args: argparse.Namespace, classes: list[str] | None) -> dict[str, Any]:
    if args.pretrained:
        from synth.diffusion.pipelines import PretrainedConfig, sample_pretrained

        config = PretrainedConfig(task=args.task, steps=args.steps or 30, guidance_scale=args.guidance or 7.5,
                                  resolution=args.imgsz, template=args.prompt,
                                  negative_prompt=args.negative_prompt, box_px=args.box_px)
        return sample_pretrained(args.pretrained, args.backgrounds, args.out, n=args.n, seed=args.seed,
                                 config=config, classes=classes, device=args.device)
    else:
        from synth.diffusion.sample import SamplerConfig, sample_dataset

        config = SamplerConfig(scheduler=args.scheduler, steps=args.steps or 50,
                               guidance_scale=1.0 if args.guidance is None else args.guidance, mode=args.inpaint_mode,
                               resample=args.resample, eta=args.eta, base=args.base)
        return sample_dataset(args.ckpt, args.backgrounds, args.out, n=args.n, seed=args.seed, config=config,
                              classes=classes, objects_per_image=args.objects_per_image,
                              requests_file=args.requests, scorer=_qc_scorer(args),
                              threshold=args.qc_threshold, max_tries=args.max_tries, device=args.device)


def _patches(data: str, spec) -> tuple[Any, Any]:
    import numpy as np

    from synth.diffusion.patches import load_coco_patches

    patch_set = load_coco_patches(data, spec)
    return (np.stack([p.image for p in patch_set.patches]),
            np.array([p.category_id for p in patch_set.patches], dtype=np.int64))


def _cmd_eval(args: argparse.Namespace) -> int:
    from synth.diffusion.patches import PatchSpec
    from synth.diffusion.qc import ClassifierScorer, TimmModelSpec, TimmNetwork, evaluate_sets

    set_threads(args.threads)
    if args.out:
        check_output_file(args.out, overwrite=args.overwrite)
    if args.ckpt:
        from synth.diffusion.model import read_checkpoint_info

        spec = read_checkpoint_info(args.ckpt).patch
    else:
        spec = PatchSpec(size_px=args.patch_size, context=args.context,
                         scale_groups_mm_px=parse_scale_groups(args.scale_groups))
    extractor = TimmNetwork(TimmModelSpec(name=args.extractor, checkpoint=args.extractor_checkpoint,
                                          random_init=args.random_init, input_size=args.imgsz),
                            device=args.device)
    scorer = None
    if args.qc_checkpoint:
        scorer = ClassifierScorer(TimmNetwork(TimmModelSpec(name=args.qc_model, checkpoint=args.qc_checkpoint),
                                              need_classifier=True, device=args.device))
    real, real_cls = _patches(args.real, spec)
    gen, gen_cls = _patches(args.generated, spec)
    report = evaluate_sets(real, gen, extractor, real_classes=real_cls, generated_classes=gen_cls, scorer=scorer,
                           threshold=args.qc_threshold, resamples=args.resamples, seed=args.seed)
    report.update({"real": str(Path(args.real).resolve()), "generated": str(Path(args.generated).resolve()),
                   "patch": spec.__dict__})
    text = json.dumps(report, indent=2)
    if args.out:
        from toolkit_core.utils import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


def _cmd_fit_extractor(args: argparse.Namespace) -> int:
    from synth.diffusion.extractor import DIGITS_EXTRACTOR, fit_digits_extractor
    from synth.diffusion.qc import ClassifierTrainConfig

    set_threads(args.threads)
    check_output_file(args.out, overwrite=args.overwrite)
    config = ClassifierTrainConfig(**{**DIGITS_EXTRACTOR.__dict__, "epochs": args.epochs, "seed": args.seed})
    print(json.dumps(fit_digits_extractor(args.out, config, progress=not args.no_progress), indent=2))
    return 0


def _cmd_fit_refiner(args: argparse.Namespace) -> int:
    from synth.diffusion.refine import RefineConfig, T0Rule, choose_t0
    from synth.diffusion.refiner import REFINER_TOOL, RefinerConfig, train_refiner

    set_threads(args.threads)
    config = RefinerConfig(size_px=args.imgsz, patch_px=args.patch_size, steps=args.steps, batch_size=args.batch,
                           learning_rate=args.lr, seed=args.seed)
    rule = T0Rule(keep=args.keep, coverage=args.coverage, min_contrast=args.min_contrast)
    refine = RefineConfig(t0=0.0, steps=args.val_steps, margin_px=3 if args.region_margin is None else args.region_margin,
                          context_px=16 if args.context_px is None else args.context_px)
    grid = _float_list(args.t0_grid, "--t0-grid")
    if args.val_data:
        from synth.diffusion.patches import load_coco

        load_coco(args.val_data)  # a bad validation set is refused before training
    out = prepare_output_dir(args.out, REFINER_TOOL, overwrite=args.overwrite)
    with owned_output_dir(out, REFINER_TOOL, overwrite=args.overwrite):
        record = train_refiner(out, config, film=args.film, progress=not args.no_progress)
        if args.val_data:
            record["t0_selection"] = choose_t0(out, args.val_data, grid=grid, rule=rule, config=refine,
                                               seed=args.seed, progress=not args.no_progress)
            record["t0"] = record["t0_selection"]["t0"]
    print(json.dumps({k: v for k, v in record.items() if k != "config"}, indent=2))
    return 0


def _cmd_refine(args: argparse.Namespace) -> int:
    from synth.diffusion.refine import REFINE_TOOL, RefineConfig, parse_images_slice, refine_dataset
    from synth.diffusion.refiner import read_refiner_record

    set_threads(args.threads)
    images = parse_images_slice(args.images)
    record = read_refiner_record(args.refiner)
    chosen = record.get("t0_selection") or {}
    if args.t0 is None and record.get("t0") is None:
        raise UserInputError("the refiner records no chosen t0 (fit it with --val-data) and none was given",
                             field="--t0")
    used = chosen.get("refine", {}) if args.t0 is None else {}
    config = RefineConfig(t0=float(record["t0"] if args.t0 is None else args.t0),
                          steps=args.steps or used.get("steps", 25),
                          margin_px=used.get("margin_px", 3) if args.region_margin is None else args.region_margin,
                          context_px=used.get("context_px", 16) if args.context_px is None else args.context_px)
    from synth.diffusion.patches import load_coco

    load_coco(args.data)  # a bad dataset is refused before the output folder is touched
    out = prepare_output_dir(args.out, REFINE_TOOL, overwrite=args.overwrite)
    with owned_output_dir(out, REFINE_TOOL, overwrite=args.overwrite):
        manifest = refine_dataset(args.refiner, args.data, out, config=config, seed=args.seed, images=images,
                                  progress=not args.no_progress)
    print(json.dumps({k: v for k, v in manifest.items() if k != "t0_selection"}, indent=2))
    return 0


def _float_list(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserInputError("expected comma-separated numbers", field=flag, value=text) from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise UserInputError("every value must lie in [0, 1]", field=flag, value=text)
    return values


def _add_region_flags(cmd: argparse.ArgumentParser) -> None:
    """One help text for fit-refiner and refine (refine's unset value is the one t0 was chosen with)."""
    cmd.add_argument("--region-margin", type=int, help="the refined region is each object mask dilated by this many "
                                                       "image pixels (default 3; refine: the one t0 was chosen with)")
    cmd.add_argument("--context-px", type=int, help="the denoised window extends this many image pixels beyond the "
                                                    "refined region (default 16; refine: the one t0 was chosen with)")


def _add_qc_flags(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--qc-checkpoint", help="local timm classifier checkpoint used as the QC filter")
    cmd.add_argument("--qc-model", help="timm architecture of the QC classifier (default: read from the checkpoint)")
    cmd.add_argument("--qc-threshold", type=float, default=0.5, help="minimum P(requested class) to accept")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``diffusion`` command group (``train``, ``sample``, ``eval``, ``fit-extractor``, ``fit-refiner``,
    ``refine``) to a CLI."""
    group = subparsers.add_parser(
        "diffusion", help="mask- and class-conditioned inpainting diffusion (train, sample, eval)",
        description="Train a diffusion model that inpaints RFOs of a chosen class into a given mask, sample "
                    "labelled radiographs with it (or with a local Stable Diffusion / RoentGen), evaluate KID/FID on an independent extractor.",
    )
    from synth.diffusion.extractor import DIGITS_EXTRACTOR
    from synth.diffusion.train import TrainConfig

    actions = group.add_subparsers(dest="diffusion_command", metavar="ACTION", required=True)

    cmd = add_command(actions, "train", _cmd_train, "train (or resume) the inpainting model on a COCO dataset")
    cmd.add_argument("--data", required=True, help="dataset to train on: COCO folder (annotations.json + images/)")
    cmd.add_argument("--out", required=True,
                     help="output: checkpoint folder (a checkpoint of this trainer there is resumed, never replaced)")
    cmd.add_argument("--preset", default="cpu", choices=PRESETS, help="model size")
    cmd.add_argument("--channels", help="override the block widths, e.g. 32,64,64,128")
    defaults = TrainConfig()
    cmd.add_argument("--steps", type=int, default=defaults.steps, help="number of steps: total optimisation steps")
    add_batch(cmd, "object patches", default=defaults.batch_size)
    add_deprecated_alias(cmd, "--batch-size", "--batch")
    cmd.add_argument("--lr", type=float, default=defaults.learning_rate, help="learning rate of AdamW")
    _add_patch_flags(cmd, "")
    cmd.add_argument("--margin", type=int, default=3, help="inpainting margin around the object (patch px)")
    cmd.add_argument("--class-drop", type=float, default=defaults.class_drop_prob,
                     help="classifier-free guidance class dropout")
    cmd.add_argument("--context-drop", type=float, default=defaults.context_drop_prob,
                     help="dropout of the mask/background channels")
    cmd.add_argument("--region-weight", type=float, default=defaults.region_weight,
                     help="loss weight inside the inpainted region (1 outside)")
    cmd.add_argument("--ema-decay", type=float, default=defaults.ema_decay,
                     help="decay of the exponential moving average of the weights that sampling uses")
    cmd.add_argument("--save-every", type=int, default=250, help="save the checkpoint every N steps")
    cmd.add_argument("--seed", type=int, default=0, help="random seed of initialisation, batches and noise")
    add_runtime_options(cmd)

    cmd = add_command(actions, "sample", _cmd_sample,
                      "inpaint RFOs into backgrounds and write a COCO dataset (the physics generator's layout)")
    source = cmd.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="diffusion checkpoint folder from `rfo-synth diffusion train`")
    source.add_argument("--pretrained", help="local diffusers Stable Diffusion / RoentGen directory")
    cmd.add_argument("--backgrounds", required=True,
                     help="background images: an image file, a folder of images, or `embedded`")
    add_output_options(cmd, "dataset folder (images/, annotations.json, manifest.json)")
    cmd.add_argument("--n", type=int, default=8, help="number of images")
    cmd.add_argument("--seed", type=int, default=0, help="random seed of placement and noise")
    cmd.add_argument("--classes", help="class names, comma-separated (default: every trained class)")
    cmd.add_argument("--objects-per-image", type=int, default=1, help="objects placed at random in each image")
    cmd.add_argument("--requests", help='JSON list of {"background", "category", "bbox" | "mask"} requests')
    cmd.add_argument("--scheduler", default="ddim", choices=("ddim", "dpm", "ddpm"),
                     help="denoising scheduler (ddim, DPM-Solver++ or ancestral ddpm)")
    cmd.add_argument("--steps", type=int, help="number of steps: denoising steps (default 50; 30 for --pretrained)")
    cmd.add_argument("--guidance", type=float, help="guidance scale (default 1.0; 7.5 for --pretrained)")
    cmd.add_argument("--inpaint-mode", default="conditional", choices=("conditional", "repaint"),
                     help="conditional: the model's own inpainting; repaint: RePaint's resampling of the known region")
    add_deprecated_alias(cmd, "--mode", "--inpaint-mode")
    cmd.add_argument("--resample", type=int, default=1, help="RePaint resampling per step")
    cmd.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    cmd.add_argument("--base", default="background", choices=("background", "fill"),
                     help="what the generated object layer is added to (residual-target checkpoints)")
    cmd.add_argument("--max-tries", type=int, default=3, help="QC attempts per object")
    _add_qc_flags(cmd)
    cmd.add_argument("--task", default="inpaint", choices=("inpaint", "text2img"), help="with --pretrained")
    cmd.add_argument("--prompt", default="chest radiograph, {object} in the {location}",
                     help="prompt template with {object}, {location}, {cls} (with --pretrained)")
    cmd.add_argument("--negative-prompt", help="what the images should not show (with --pretrained)")
    add_imgsz(cmd, "the pretrained pipeline's resolution (with --pretrained)", default=512)
    add_deprecated_alias(cmd, "--resolution", "--imgsz")
    cmd.add_argument("--box-px", type=int, default=120, help="object box size (with --pretrained)")
    add_runtime_options(cmd)

    cmd = add_command(actions, "eval", _cmd_eval,
                      "KID (both-set bootstrap interval) and, from 2000 crops per set, FID of generated vs real object "
                      "crops on a named extractor, plus QC acceptance")
    cmd.add_argument("--real", required=True, help="COCO dataset of real (held-out) images")
    cmd.add_argument("--generated", required=True, help="COCO dataset written by `sample`")
    cmd.add_argument("--extractor", help="timm architecture of the feature extractor (or read from checkpoint)")
    cmd.add_argument("--extractor-checkpoint", help="local timm checkpoint of the extractor")
    cmd.add_argument("--random-init", action="store_true",
                     help="allow a randomly initialised extractor (smoke tests; numbers not comparable)")
    add_imgsz(cmd, "the extractor's input (default: the checkpoint's, else 64)")
    add_deprecated_alias(cmd, "--input-size", "--imgsz")
    cmd.add_argument("--ckpt", help="diffusion checkpoint folder to take the patch geometry from")
    _add_patch_flags(cmd, " (without --ckpt)")
    cmd.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the KID interval")
    cmd.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap")
    _add_qc_flags(cmd)
    add_output_options(cmd, "report JSON file (the report is printed either way)", required=False)
    add_runtime_options(cmd, progress=False)

    cmd = add_command(actions, "fit-extractor", _cmd_fit_extractor,
                      "train the eval feature extractor on scikit-learn's digits (independent of RFO data and QC)")
    add_output_options(cmd, "checkpoint file (.pt)")
    cmd.add_argument("--epochs", type=int, default=DIGITS_EXTRACTOR.epochs, help="training epochs")
    cmd.add_argument("--seed", type=int, default=0, help="random seed of initialisation, order and augmentation")
    add_runtime_options(cmd, devices=("cpu",), device_help="cpu only (a small CPU classifier)")

    from synth.diffusion.refine import DEFAULT_T0_GRID, T0Rule
    from synth.diffusion.refiner import RefinerConfig

    refiner_defaults, rule = RefinerConfig(), T0Rule()
    cmd = add_command(actions, "fit-refiner", _cmd_fit_refiner,
                      "train the refiner (a denoiser of object-free crops of the real film) and, with --val-data, "
                      "choose its t0 on validation renders")
    add_output_options(cmd, "refiner folder (unet/, scheduler/, refiner.json)")
    cmd.add_argument("--film", help="the real radiograph to learn (default: the embedded one, the physics "
                                    "renderer's own background)")
    add_imgsz(cmd, "side of the renders to refine; the film is resampled to it", default=refiner_defaults.size_px)
    cmd.add_argument("--patch-size", type=int, default=refiner_defaults.patch_px,
                     help="object patch side in pixels: here the side of the object-free training crops")
    cmd.add_argument("--steps", type=int, default=refiner_defaults.steps, help="number of steps: optimisation steps")
    add_batch(cmd, "film crops", default=refiner_defaults.batch_size)
    cmd.add_argument("--lr", type=float, default=refiner_defaults.learning_rate, help="learning rate of AdamW")
    cmd.add_argument("--seed", type=int, default=0, help="random seed of initialisation, crops and noise")
    cmd.add_argument("--val-data", help="validation renders (COCO folder) on which t0 is chosen; never the test set")
    cmd.add_argument("--t0-grid", default=",".join(f"{v:g}" for v in DEFAULT_T0_GRID),
                     help="t0 values tried, fractions of the noise schedule")
    cmd.add_argument("--keep", type=float, default=rule.keep,
                     help="an object keeps its label if its refined contrast is at least this fraction of its physics one")
    cmd.add_argument("--coverage", type=float, default=rule.coverage,
                     help="fraction of validation objects that must keep their label at the chosen t0")
    cmd.add_argument("--min-contrast", type=float, default=rule.min_contrast,
                     help="validation objects fainter than this (grey levels, 0-1) are not counted")
    cmd.add_argument("--val-steps", type=int, default=25,
                     help="DDIM steps over the whole schedule when refining the validation renders")
    _add_region_flags(cmd)
    add_runtime_options(cmd, devices=("cpu",), device_help="cpu only (a small CPU denoiser)")

    cmd = add_command(actions, "refine", _cmd_refine,
                      "refine the objects of physics renders with the refiner (SDEdit from t0; labels and every "
                      "pixel outside the refined region unchanged)")
    cmd.add_argument("--refiner", required=True, help="refiner folder from `rfo-synth diffusion fit-refiner`")
    cmd.add_argument("--data", required=True, help="dataset to refine: COCO folder (annotations.json + images/)")
    add_output_options(cmd, "dataset folder (images/, annotations.json, manifest.json)")
    cmd.add_argument("--t0", type=float, help="noise level refined from, a fraction of the schedule in [0, 1] "
                                              "(default: the t0 the refiner records)")
    cmd.add_argument("--steps", type=int, help="number of steps: DDIM steps over the whole schedule, of which "
                                               "round(t0 x steps) run (default: the refiner's t0 choice, else 25)")
    _add_region_flags(cmd)
    cmd.add_argument("--images", help="START:STOP, the dataset's images (in id order) to refine (default: all)")
    cmd.add_argument("--seed", type=int, default=0, help="random seed of the noise")
    add_runtime_options(cmd, devices=("cpu",), device_help="cpu only (a small CPU denoiser)")
    return group


def parse_scale_groups(text: str) -> tuple[float, ...] | None:
    """``--scale-groups``: comma-separated mm per patch pixel (``0.75,2,5``), or ``fit`` for the
    fit-to-patch geometry of checkpoints written before scale groups (``None``)."""
    if text.strip().lower() == "fit":
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserInputError("expected comma-separated mm per pixel (e.g. 0.75,2,5) or 'fit'", field="--scale-groups",
                             value=text) from None


def _add_patch_flags(cmd: argparse.ArgumentParser, when: str) -> None:
    from synth.diffusion.patches import DEFAULT_SCALE_GROUPS_MM_PX

    cmd.add_argument("--patch-size", type=int, default=64, help=f"object patch side in pixels{when}")
    add_deprecated_alias(cmd, "--size", "--patch-size")
    cmd.add_argument("--context", type=float, default=1.6,
                     help=f"crop side / object size, at least (the window holds this multiple of the object's longest "
                          f"side){when}")
    cmd.add_argument("--scale-groups", default=",".join(f"{g:g}" for g in DEFAULT_SCALE_GROUPS_MM_PX),
                     help="patch pixel sizes in mm of the scale groups, finest first; each object is cut at the finest "
                          "whose window holds it with its context ('fit': fit each object to its patch, the geometry "
                          "of checkpoints written before scale groups); eval reads them from --ckpt when given")
