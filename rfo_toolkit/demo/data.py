"""Demo stage 2: physics-synthesised radiographs over the real backgrounds, split by patient.

The embedded backgrounds are one real radiograph and one real CT, so every synthetic image shares
anatomy with the others. To give the deletion request of the demo a unit that behaves like a
patient, consecutive synthetic images are grouped into pseudo-patients (``images_per_patient``); the
train/test split is patient-level (:func:`rfo_bench.splits.split_dataset`), so no pseudo-patient is
on both sides. This is stated in the report: test images are new renders (new objects, poses,
noise) over the same two real backgrounds, not new anatomy.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfo_bench.io.coco import load_dataset_coco, read_coco, write_coco
from rfo_bench.splits import split_dataset, split_summary
from toolkit_core.output_dirs import remove_owned


@dataclass(frozen=True)
class DemoDataPlan:
    """How much to render.

    Attributes:
        n_radiograph: images inserted into the real radiograph.
        n_ct: images projected through the real CT.
        size: image side in pixels.
        classes: RFO classes drawn (visible at ``size``; sub-millimetre needles are not).
        images_per_patient: consecutive images grouped into one pseudo-patient.
        test_fraction: share of pseudo-patients held out for testing.
        seed_offset: added to the render seeds (``seed * 1000 + mode offset``), so that two plans of one
            demo draw different films.
    """

    n_radiograph: int
    n_ct: int
    size: int
    classes: tuple[str, ...] = ("sponge", "clamp", "blade", "chain")
    images_per_patient: int = 4
    test_fraction: float = 0.25
    seed_offset: int = 0


def demo_data_plan(fast: bool) -> DemoDataPlan:
    """The demo's data sizes: ``fast`` for tests, the default for ``make demo``."""
    if fast:
        return DemoDataPlan(n_radiograph=24, n_ct=8, size=192)
    return DemoDataPlan(n_radiograph=64, n_ct=16, size=256)


def synthesise_demo_data(stage_dir: Path, plan: DemoDataPlan, seed: int, radiograph: str | None,
                         ct: str | None, progress: bool = False) -> dict[str, Any]:
    """Render both modes, merge them with pseudo-patient ids, and write ``train/`` and ``test/``.

    ``progress``: a bar per mode (films at clinical resolution take about a second each).

    Returns:
        A summary: image / object counts per split and class, and the physics manifests' key fields.
    """
    from synth.physics.generate import PhysicsConfig, generate_dataset
    from synth.physics.preview import contact_sheet

    raw = {}
    modes = [(mode, n, background, offset) for mode, n, background, offset in
             (("radiograph", plan.n_radiograph, radiograph, 0), ("ct", plan.n_ct, ct, 1)) if n > 0]
    for mode, n, background, offset in modes:
        folder = stage_dir / f"raw_{mode}"
        config = PhysicsConfig(mode=mode, size=plan.size, classes=plan.classes)
        raw[mode] = generate_dataset(folder, n=n, seed=seed * 1000 + offset + plan.seed_offset, config=config,
                                     backgrounds=background, progress=progress)
    contact_sheet([stage_dir / f"raw_{mode}" for mode, *_ in modes], stage_dir / "contact_sheet.png",
                  n=8, columns=4, tile_px=256)

    merged = stage_dir / "all"
    (merged / "images").mkdir(parents=True)
    images, annotations, categories = [], [], None
    for mode, *_ in modes:
        coco = load_dataset_coco(stage_dir / f"raw_{mode}")
        categories = coco["categories"]
        id_map = {}
        for record in coco["images"]:
            new_id = len(images) + 1
            id_map[record["id"]] = new_id
            name = f"{mode}_{Path(record['file_name']).name}"
            shutil.move(str(stage_dir / f"raw_{mode}" / record["file_name"]), merged / "images" / name)
            patient = (new_id - 1) // plan.images_per_patient
            images.append({**record, "id": new_id, "file_name": f"images/{name}", "mode": mode,
                           "patient_id": f"patient-{patient:03d}"})
        for ann in coco["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": id_map[ann["image_id"]]})
        remove_owned(stage_dir / f"raw_{mode}" / "images")
    (merged / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}, indent=1))

    dataset = read_coco(merged / "annotations.json")
    split = split_dataset(dataset, {"train": 1.0 - plan.test_fraction, "test": plan.test_fraction}, seed=seed)
    by_id = dataset.image_by_id()
    for name, ids in split.items():
        write_coco(dataset.with_images([by_id[i] for i in ids]), merged / f"{name}.json")
    class_counts: dict[str, dict[str, int]] = {}
    for name, ids in split.items():
        counts: dict[str, int] = {}
        for image_id in ids:
            for obj in by_id[image_id].objects:
                label = dataset.category(obj.category_id).name
                counts[label] = counts.get(label, 0) + 1
        class_counts[name] = dict(sorted(counts.items()))
    return {
        "plan": {"n_radiograph": plan.n_radiograph, "n_ct": plan.n_ct, "size": plan.size,
                 "classes": list(plan.classes), "images_per_patient": plan.images_per_patient,
                 "test_fraction": plan.test_fraction},
        "seed": seed,
        "splits": split_summary(dataset, split),
        "objects_per_class": class_counts,
        "n_patients": len({r["patient_id"] for r in images}),
        "spectrum": {key: (next(iter(raw.values())).get("spectrum") or {}).get(key)
                     for key in ("kvp", "filters", "mas", "mean_energy_kev", "hvl_mm_al")},
        "figures": ["contact_sheet.png"],
    }
