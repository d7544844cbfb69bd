"""``rfo-bench``: RFO dataset tools and the evaluator.

Sub-commands::

    rfo-bench inspect IMAGE
    rfo-bench validate DATA [--format F] [--root DIR] [--no-images] [--json]
    rfo-bench convert SRC --to coco|csv|yolo --out PATH [--csv-convention hopkins|object_cxr] [--split-file S]
    rfo-bench split DATA --out DIR [--fractions 0.7,0.1,0.2 | --kfold K] [--seed N]
    rfo-bench eval --gt GT --pred PRED [--cls CLS.csv] --out DIR [--bootstrap 1000] [--froc-variant reference]

Outputs follow the one rule of :mod:`toolkit_core.cli_support`: an existing output is refused unless
``--overwrite`` is given, and ``--overwrite`` replaces only a folder the same command wrote.

The detector sub-commands (``train``, ``predict``, ``benchmark``) are registered by
:func:`rfo_bench.detectors.commands.register`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from toolkit_core.cli_support import (
    FLAG_MEANINGS,
    add_command,
    add_output_options,
)
from toolkit_core.errors import UserInputError
from toolkit_core.output_dirs import check_output_file, owned_output_dir, prepare_output_dir

logger = logging.getLogger(__name__)

CONVERT_TOOL, SPLIT_TOOL, EVAL_TOOL = "rfo-bench convert", "rfo-bench split", "rfo-bench eval"


def _cmd_inspect(args: argparse.Namespace) -> int:
    from rfo_bench.io.images import read_image

    image = read_image(args.image)
    summary = {
        "file": image.source,
        "shape": list(image.shape),
        "bits_stored": image.bits_stored,
        "photometric": image.photometric,
        "pixel_spacing_mm": list(image.pixel_spacing_mm),
        "spacing_is_default": image.spacing_is_default,
        "min": float(image.pixels.min()),
        "max": float(image.pixels.max()),
        "mean": float(image.pixels.mean()),
    }
    print(json.dumps(summary, indent=2))
    return 0


def _add_data_options(cmd: argparse.ArgumentParser, prefix: str = "") -> None:
    cmd.add_argument(f"--{prefix}format", dest=f"{prefix.replace('-', '_')}format", default="auto",
                     choices=("auto", "coco", "csv", "yolo", "folders"), help="ground-truth format")
    cmd.add_argument(f"--{prefix}root", dest=f"{prefix.replace('-', '_')}root", default=None,
                     help="image root for COCO/CSV paths (default: the file's directory)")
    cmd.add_argument("--csv-convention", default="auto", choices=("auto", "object_cxr", "hopkins"),
                     help="object convention of a ground-truth CSV")
    cmd.add_argument("--yolo-split", default=None, choices=("train", "val", "test"),
                     help="read only this split of a YOLO data.yaml (default: all)")


def _read(path: str, args: argparse.Namespace, prefix: str = "", *, patients: bool = False):
    from rfo_bench.io.formats import fill_patient_ids, read_dataset

    key = prefix.replace("-", "_")
    dataset = read_dataset(path, fmt=getattr(args, f"{key}format"), root=getattr(args, f"{key}root"),
                           csv_convention=args.csv_convention,
                           yolo_splits=(args.yolo_split,) if args.yolo_split else None)
    return fill_patient_ids(dataset) if patients else dataset


def _cmd_validate(args: argparse.Namespace) -> int:
    from rfo_bench.validate import check_dataset, format_problems, problems_to_dict

    dataset, problems = check_dataset(
        args.data, fmt=args.format, root=args.root, csv_convention=args.csv_convention,
        images=not args.no_images, decode=not args.header_only,
        yolo_splits=(args.yolo_split,) if args.yolo_split else None, progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps({"data": str(args.data), "images": len(dataset.images) if dataset else 0,
                          **problems_to_dict(problems)}, indent=2))
    else:
        print(format_problems(args.data, problems))
        if dataset is not None:
            print(f"{len(dataset.images)} images, {sum(len(r.objects) for r in dataset.images)} objects, "
                  f"{len(dataset.categories)} categories")
    return 1 if problems else 0


def _load_split_file(path: str) -> dict[str, list[int]]:
    from rfo_bench.io.coco import load_json

    data = load_json(path)
    splits = data.get("splits", data) if isinstance(data, dict) else None
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        raise UserInputError("split file must map split names to lists of image ids", file=path)
    return {str(k): [int(i) for i in v] for k, v in splits.items()}


def _cmd_convert(args: argparse.Namespace) -> int:
    from rfo_bench.io.coco import write_coco
    from rfo_bench.io.rfo_csv import write_rfo_csv
    from rfo_bench.io.yolo_format import write_yolo
    from rfo_bench.splits import pseudonymised_dataset

    if args.pseudonymise_names and args.to == "yolo":
        raise UserInputError("applies to coco and csv outputs only: a YOLO layout must name the real images",
                             field="--pseudonymise-names")
    out = Path(args.out)
    if args.to != "yolo":
        check_output_file(out, overwrite=args.overwrite)
    else:
        prepare_output_dir(out, CONVERT_TOOL, overwrite=args.overwrite)
    dataset = _read(args.src, args)
    if args.to == "coco":
        from rfo_bench.io.formats import fill_image_sizes

        dataset = fill_image_sizes(dataset, missing_ok=True)  # read from the real files, before any pseudonym
        if args.pseudonymise_names:
            dataset = pseudonymised_dataset(dataset, root=out.parent)
        written = write_coco(dataset, out)
    elif args.to == "csv":
        convention = args.csv_out_convention
        if args.pseudonymise_names:
            dataset = pseudonymised_dataset(dataset, root=out.parent)
        written = write_rfo_csv(dataset, out, convention=convention, include_patient=args.with_patient)
    else:
        splits = _load_split_file(args.split_file) if args.split_file else None
        with owned_output_dir(out, CONVERT_TOOL, overwrite=args.overwrite):
            written = write_yolo(dataset, out, splits, copy=args.copy_images)
    print(f"wrote {written} ({len(dataset.images)} images)")
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from rfo_bench.io.coco import write_coco
    from rfo_bench.splits import kfold_splits, split_dataset, split_summary
    from toolkit_core.utils import atomic_write_bytes

    out = prepare_output_dir(args.out, SPLIT_TOOL, overwrite=args.overwrite)  # refused before any work
    dataset = _read(args.data, args, patients=True)
    if args.kfold:
        folds = kfold_splits(dataset, args.kfold, seed=args.seed)
        manifest = {"seed": args.seed, "kfold": args.kfold, "folds": folds,
                    "summary": [split_summary(dataset, f) for f in folds]}
        named = {f"fold{k}_{name}": ids for k, fold in enumerate(folds) for name, ids in fold.items()}
    else:
        try:
            values = [float(v) for v in args.fractions.split(",")]
        except ValueError:
            raise UserInputError("fractions must be comma-separated numbers", field="--fractions",
                                 value=args.fractions) from None
        names = ("train", "val", "test")[: len(values)] if len(values) <= 3 else [f"split{k}" for k in range(len(values))]
        named = split_dataset(dataset, dict(zip(names, values)), seed=args.seed)
        manifest = {"seed": args.seed, "fractions": dict(zip(names, values)), "splits": named,
                    "summary": split_summary(dataset, named)}
    with owned_output_dir(out, SPLIT_TOOL, overwrite=args.overwrite):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "splits.json", json.dumps(manifest, indent=1).encode("utf-8"))
        if args.pseudonymise_names:
            from rfo_bench.splits import pseudonymised_dataset

            dataset = pseudonymised_dataset(dataset, root=out)
        by_id = dataset.image_by_id()
        for name, ids in named.items():
            write_coco(dataset.with_images(by_id[i] for i in ids), out / f"{name}.json")
    print(json.dumps(manifest["summary"], indent=1))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from rfo_bench.evaluate import EvalConfig, evaluate_detailed, write_report
    from rfo_bench.predictions import read_predictions

    if args.pred is None and args.cls is None:
        raise UserInputError("give --pred (boxes or points) and/or --cls (image scores)", field="--pred")
    out = prepare_output_dir(args.out, EVAL_TOOL, overwrite=args.overwrite)  # refused before any work
    gt = _read(args.gt, args, patients=args.bootstrap_unit != "image")
    predictions = read_predictions(args.pred, gt, classification=args.cls)
    config = EvalConfig(
        coco_backend=args.coco_backend, froc_variant=args.froc_variant, bootstrap=args.bootstrap, seed=args.seed,
        bootstrap_unit=args.bootstrap_unit, auroc_positive=args.auroc_positive,
    )
    evaluation = evaluate_detailed(gt, predictions, config, command=args.command_line,
                                   progress=not args.no_progress)
    with owned_output_dir(out, EVAL_TOOL, overwrite=args.overwrite):
        written = write_report(evaluation, out, gt, predictions, plots=not args.no_plots)
    report = evaluation.report
    coco, froc = report.get("coco") or {}, report.get("froc") or {}
    ci = report.get("ci95", {})

    def show(name: str, value: float | None, key: str) -> str:
        interval = ci.get(key) if isinstance(ci, dict) else None
        text = "n/a" if value is None else f"{value:.4f}"
        return f"{name} {text}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")

    print("  ".join([show("AP50", coco.get("AP50"), "AP50"), show("AP", coco.get("AP"), "AP"),
                     show("FROC", froc.get("score"), "froc"), show("AUROC", report.get("auroc"), "auroc")]))
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the library's sub-commands to the ``rfo-bench`` parser (built in :mod:`rfo_toolkit.cli`)."""
    cmd = add_command(
        sub, "inspect", _cmd_inspect,
        "read one image (PNG/JPEG/DICOM) with the shared reader and print its properties",
    )
    cmd.add_argument("image", help="image file")

    cmd = add_command(sub, "validate", _cmd_validate,
                      "report every problem of a dataset in one pass (exit 1 when any is found)")
    cmd.add_argument("data", help="COCO json, object-CXR/Hopkins CSV, YOLO data.yaml or positive/negative folder")
    _add_data_options(cmd)
    cmd.add_argument("--no-images", action="store_true", help="check annotations only, do not open images")
    cmd.add_argument("--header-only", action="store_true", help="read image headers only (faster, misses truncation)")
    cmd.add_argument("--json", action="store_true", help="print JSON: the problems")
    cmd.add_argument("--no-progress", action="store_true", help=f"{FLAG_MEANINGS['--no-progress']} (on stderr)")

    cmd = add_command(sub, "convert", _cmd_convert, "convert a dataset between COCO, CSV and the YOLO layout")
    cmd.add_argument("src", help="source dataset (any supported format)")
    cmd.add_argument("--to", required=True, choices=("coco", "csv", "yolo"), help="target format")
    add_output_options(cmd, "file (coco/csv) or folder (yolo)")
    _add_data_options(cmd)
    cmd.add_argument("--csv-out-convention", default="hopkins", choices=("hopkins", "object_cxr"),
                     help="object convention of a written CSV")
    cmd.add_argument("--with-patient", action="store_true", help="add a patient_id column to a written CSV")
    cmd.add_argument("--split-file", default=None, help="splits.json from `rfo-bench split` (YOLO train/val/test)")
    cmd.add_argument("--copy-images", action="store_true", help="copy images into the YOLO layout instead of linking")
    cmd.add_argument("--pseudonymise-names", action="store_true",
                     help="write keyed pseudonyms (see toolkit_core.pseudonym) instead of file names and patient "
                          "ids, for files that leave the site (coco/csv only)")

    cmd = add_command(sub, "split", _cmd_split,
                      "patient-level stratified split (or k-fold); writes DIR/splits.json and one COCO json per split")
    cmd.add_argument("data", help="dataset (any supported format)")
    add_output_options(cmd, "folder of splits.json and one COCO json per split")
    _add_data_options(cmd)
    cmd.add_argument("--fractions", default="0.7,0.1,0.2", help="train,val,test fractions")
    cmd.add_argument("--kfold", type=int, default=0, help="k-fold cross-validation instead of fractions")
    cmd.add_argument("--seed", type=int, default=0, help="random seed of the shuffle")
    cmd.add_argument("--pseudonymise-names", action="store_true",
                     help="write keyed pseudonyms (see toolkit_core.pseudonym) instead of file names and patient "
                          "ids into the per-split COCO files, for manifests that leave the site")

    cmd = add_command(sub, "eval", _cmd_eval,
                      "evaluate detections: COCO mAP, FROC, AUROC with bootstrap CIs; writes report.json/.md and plots")
    cmd.add_argument("--gt", required=True, help="ground truth (any supported format)")
    cmd.add_argument("--pred", default=None, help="COCO results .json or Hopkins localization .csv")
    cmd.add_argument("--cls", default=None, help="Hopkins classification .csv (image-level scores for AUROC)")
    add_output_options(cmd, "folder of report.json, report.md and plots")
    _add_data_options(cmd)
    cmd.add_argument("--coco-backend", default="native", choices=("native", "faster_coco_eval", "pycocotools"),
                     help="implementation of the 12 COCO numbers (all give the same values)")
    cmd.add_argument("--froc-variant", default="reference", choices=("reference", "corrected"),
                     help="reference = the object-CXR script (comparable with published numbers)")
    cmd.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (0 = no intervals)")
    cmd.add_argument("--bootstrap-unit", default="auto", choices=("auto", "image", "patient"),
                     help="resampling unit; auto = patients when every image has a patient id")
    cmd.add_argument("--auroc-positive", default="any", choices=("any", "critical"),
                     help="image label for AUROC: any RFO, or critical RFOs only")
    cmd.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap")
    cmd.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    cmd.add_argument("--no-progress", action="store_true", help=f"{FLAG_MEANINGS['--no-progress']} (on stderr)")

    from rfo_bench.detectors.commands import register as register_detectors

    register_detectors(sub)
