"""The evaluator end to end, its inputs, and the rfo-bench validate/convert/split/eval commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rfo_bench.evaluate import EvalConfig, evaluate
from rfo_bench.io.coco import read_coco
from rfo_bench.io.images import write_png16
from rfo_bench.metrics import coco_eval as ce
from rfo_bench.predictions import read_coco_results, read_localization_csv, read_predictions
from rfo_toolkit.cli import rfo_bench_main as main
from toolkit_core.errors import UserInputError

REQUIRED_COCO = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}


@pytest.fixture
def small_set(tmp_path):
    """12 images of 17x11 px (6 patients); objects on 8 of them, sponge (critical) or chain (non-critical)."""
    rng = np.random.default_rng(0)
    images, anns, preds = [], [], []
    for i in range(12):
        write_png16(tmp_path / f"im{i}.png", rng.random((11, 17)))
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": 17, "height": 11, "patient_id": f"p{i // 2}"})
        if i % 3:
            cat = 1 if i % 2 else 7
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": [2, 1, 6, 5],
                         "area": 30, "iscrowd": 0})
            preds.append({"image_id": i + 1, "category_id": cat, "bbox": [2.5, 1, 6, 5], "score": float(rng.random())})
        preds.append({"image_id": i + 1, "category_id": 1, "bbox": [12, 6, 3, 3], "score": float(rng.random() * 0.5)})
    gt = {"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "sponge", "supercategory": "critical"}, {"id": 7, "name": "chain", "supercategory": "non_critical"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    return tmp_path, gt, preds


def test_evaluate_report_matches_components(small_set):
    root, gt_dict, preds = small_set
    gt = read_coco(root / "gt.json")
    report = evaluate(gt, read_predictions(root / "pred.json", gt), EvalConfig(bootstrap=200, seed=1))
    reference = ce.reference_coco_eval(gt_dict, preds, "pycocotools")
    assert set(report["coco"]) == REQUIRED_COCO
    # two float64 code paths of the same formulas: equal up to rounding (see test_coco_eval)
    np.testing.assert_allclose([report["coco"][k] for k in ce.STAT_NAMES], [reference.stats[k] for k in ce.STAT_NAMES],
                               rtol=0, atol=1e-12)
    assert set(report["per_category"]) == {"sponge", "chain"}
    assert set(report["strata"]) == {"critical", "non_critical"}
    assert report["froc"]["fps_per_image"] == [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert len(report["froc"]["sensitivity"]) == 7
    assert report["froc"]["score"] == pytest.approx(np.mean(report["froc"]["sensitivity"]))
    assert report["bootstrap"]["unit"] == "patient"
    for key in ("AP50", "AP", "froc", "auroc"):
        low, high = report["ci95"][key]
        assert low <= high
    assert report["ci95"]["AP50"][0] <= report["coco"]["AP50"] <= report["ci95"]["AP50"][1]
    # same seed, same intervals
    again = evaluate(gt, read_predictions(root / "pred.json", gt), EvalConfig(bootstrap=200, seed=1))
    assert again["ci95"] == report["ci95"]


def test_backends_give_the_same_report(small_set):
    root, _, _ = small_set
    gt = read_coco(root / "gt.json")
    preds = read_predictions(root / "pred.json", gt)
    native = evaluate(gt, preds, EvalConfig(bootstrap=0))
    fast = evaluate(gt, preds, EvalConfig(bootstrap=0, coco_backend="faster_coco_eval"))
    np.testing.assert_allclose(list(native["coco"].values()), list(fast["coco"].values()), atol=1e-12)


def _bad(root, text, name="pred.json"):
    (root / name).write_text(text)
    return root / name


def test_prediction_errors_name_file_and_entry(small_set):
    root, _, _ = small_set
    gt = read_coco(root / "gt.json")
    cases = [
        ('[{"image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2], "score": 0.5}]', r"\[0\].image_id: prediction for an image id"),
        ('[{"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "score": NaN}]', r"\[0\].score: score must be a finite"),
        ('[{"image_id": 1, "category_id": 1, "bbox": [1, 1, -2, 2], "score": 0.5}]', r"\[0\].bbox: bbox has a negative"),
        ('[{"image_id": 1, "category_id": 5, "bbox": [1, 1, 2, 2], "score": 0.5}]', r"\[0\].category_id: unknown category"),
    ]
    for text, message in cases:
        with pytest.raises(UserInputError, match="pred.json: " + message):
            read_coco_results(_bad(root, text), gt)
    path = _bad(root, "image_name,prediction\nim1.png,0.5 3 4;0.2 3\n", "loc.csv")
    with pytest.raises(UserInputError, match=r"loc.csv: line 2 prediction 2: each prediction must be 3"):
        read_localization_csv(path, gt)


def test_localization_csv_gives_froc_without_coco(small_set):
    root, _, _ = small_set
    gt = read_coco(root / "gt.json")
    lines = ["image_name,prediction"] + [f"im{i}.png,0.9 5 3" for i in range(12)]
    (root / "loc.csv").write_text("\n".join(lines) + "\n")
    (root / "cls.csv").write_text("image_name,prediction\n" + "\n".join(f"im{i}.png,{i / 12}" for i in range(12)) + "\n")
    preds = read_predictions(root / "loc.csv", gt, classification=root / "cls.csv")
    report = evaluate(gt, preds, EvalConfig(bootstrap=50))
    assert report["coco"] is None and report["auroc_image_score"] == "classification_csv"
    # all points (5, 3) tie at 0.9, so file order decides; images 0, 3, 6, 9 are negatives (FPs), the
    # others hit their box [2, 1, 8, 6]. 2 FPs (0.167/img) after im3: 0.125 -> 2/8 hits; 3 FPs after im6:
    # 0.25 -> 4/8; 0.5 FP/img is never reached: the reference repeats 0.5, the corrected variant uses 8/8.
    assert report["froc"]["sensitivity"] == [0.25, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    corrected = evaluate(gt, preds, EvalConfig(bootstrap=0, froc_variant="corrected"))
    assert corrected["froc"]["sensitivity"] == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    # AUROC from the classification CSV (score i / 12): negatives below each positive 1,2,4,5,7,8,10,11 are
    # 1,1,2,2,3,3,4,4 = 20 of 8 x 4 pairs
    assert report["auroc"] == pytest.approx(20 / 32)


def test_cli_eval_writes_report_and_plots(small_set, capsys):
    root, _, _ = small_set
    out = root / "out"
    assert main(["eval", "--gt", str(root / "gt.json"), "--pred", str(root / "pred.json"), "--out", str(out),
                 "--bootstrap", "100"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["coco"]) == REQUIRED_COCO and "ci95" in report and "auroc" in report
    # the header states the command that ran, also when called in-process (not the host's sys.argv)
    assert report["run"]["command"].startswith("rfo-bench eval --gt ") and "--bootstrap 100" in report["run"]["command"]
    # every written figure has a caption saying what it shows (what is drawn: test_evaluate_figures.py)
    assert set(report["figures"]) == {"froc.png", "pr_curves.png", "errors.png"}
    assert {p.name for p in out.glob("*.png")} == set(report["figures"])
    assert "bootstrap interval of each sensitivity (100 replicates over patients)" in report["figures"]["froc.png"]
    # the header says what made the report
    run = report["run"]
    assert run["seed"] == 0 and run["bootstrap"] == 100 and run["toolkit_version"]
    assert isinstance(run["command"], str)  # this process's command line (here the test runner's)
    import csv

    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 12
    # every annotated image has one shifted detection (IoU 27.5 / 32.5 = 0.85) and one stray box: 1 TP, 1 FP
    for row in rows:
        annotated = row["objects"] == "1"
        assert (row["tp_iou50"], row["fp_iou50"], row["missed_iou50"]) == (("1", "1", "0") if annotated else ("0", "1", "0"))
    markdown = (out / "report.md").read_text()
    assert "| AP50 |" in markdown and "100 bootstrap replicates over patients, seed 0" in markdown
    assert "![froc.png](froc.png)" in markdown and "± 0.00" not in markdown


def test_cli_bad_input_is_one_line_exit_2(small_set, capsys):
    root, _, _ = small_set
    _bad(root, '[{"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "score": NaN}]')
    code = main(["eval", "--gt", str(root / "gt.json"), "--pred", str(root / "pred.json"), "--out", str(root / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pred.json" in err[0] and "[0].score" in err[0]
    (root / "nogt.json").write_text('{"annotations": [], "categories": []}')
    code = main(["validate", str(root / "nogt.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no `images` list" in err[0]


def test_cli_convert_and_split(small_set, capsys):
    root, _, _ = small_set
    assert main(["convert", str(root / "gt.json"), "--to", "csv", "--out", str(root / "gt.csv")]) == 0
    assert main(["validate", str(root / "gt.csv")]) == 0
    assert main(["split", str(root / "gt.json"), "--out", str(root / "splits"), "--seed", "3"]) == 0
    manifest = json.loads((root / "splits" / "splits.json").read_text())
    ids = sum(manifest["splits"].values(), [])
    assert sorted(ids) == list(range(1, 13))
    train = read_coco(root / "splits" / "train.json")
    assert all(train.resolve(r).is_file() for r in train.images)


def test_image_level_folders_with_classification_csv(tmp_path, capsys):
    for folder, n in (("positive", 3), ("negative", 3)):
        for i in range(n):
            write_png16(tmp_path / "data" / folder / f"{i}.png", np.zeros((11, 17)))
    scores = {"positive": ("0.5", "0.6", "0.7"), "negative": ("0.2", "0.4", "0.6")}
    rows = [f"{folder}/{i}.png,{s}" for folder, values in scores.items() for i, s in enumerate(values)]
    (tmp_path / "cls.csv").write_text("image_path,prediction\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(["eval", "--gt", str(tmp_path / "data"), "--cls", str(tmp_path / "cls.csv"), "--out", str(out),
                 "--bootstrap", "50"]) == 0
    report = json.loads((out / "report.json").read_text())
    # positives 0.5, 0.6, 0.7 vs negatives 0.2, 0.4, 0.6: 2 + 2.5 (one tie) + 3 wins of 9 pairs
    assert report["auroc"] == pytest.approx(7.5 / 9)
    assert report["coco"] is None and report["froc"] is None


def test_hopkins_csv_on_dicom_with_localization_csv(tmp_path):
    """A real radiograph (DICOM), Hopkins ground truth with a box and a polygon, point predictions.

    Sorted points: 0.9 in the box (hit), 0.8 FP (1 FP/image: 0.125 recorded, sens 1/2), 0.7 in the
    polygon (hit; the reference records 0.25 one prediction late: sens 2/2), 0.3 FP (2 FP/image: 0.5
    recorded, 1.0). Padding repeats 1.0: score (0.5 + 6) / 7. The corrected variant records 0.125 ... 1
    at the first FP (0.5 each), 2 at the second (1.0) and pads with the final 1.0: (4 x 0.5 + 3) / 7.
    """
    import shutil

    from rfo_bench.io.embedded import embedded_radiograph_path
    from rfo_bench.io.formats import fill_patient_ids, read_dataset

    shutil.copyfile(embedded_radiograph_path(), tmp_path / "cxr.dcm")
    (tmp_path / "gt.csv").write_text(
        "image_path,annotation\ncxr.dcm,1_1_0 800 900 900 1000;2_0_1 1200 400 1300 420 1260 520\n")
    (tmp_path / "loc.csv").write_text(
        "image_name,prediction\ncxr.dcm,0.9 850 950;0.8 1500 1500;0.7 1255 440;0.3 200 200\n")
    gt = fill_patient_ids(read_dataset(tmp_path / "gt.csv"))
    assert gt.images[0].patient_id is not None
    preds = read_predictions(tmp_path / "loc.csv", gt)
    reference = evaluate(gt, preds, EvalConfig(bootstrap=0))["froc"]
    assert reference["sensitivity"] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert reference["score"] == pytest.approx(6.5 / 7)
    corrected = evaluate(gt, preds, EvalConfig(bootstrap=0, froc_variant="corrected"))["froc"]
    assert corrected["sensitivity"] == [0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    assert corrected["score"] == pytest.approx(5.0 / 7)


def test_critical_auroc_scores_images_by_critical_detections(small_set):
    root, _, _ = small_set
    gt = read_coco(root / "gt.json")
    # one confident chain (non-critical) detection on every image; sponge detections on sponge images only
    preds = [{"image_id": r.image_id, "category_id": 7, "bbox": [1, 1, 3, 3], "score": 0.99} for r in gt.images]
    preds += [{"image_id": r.image_id, "category_id": 1, "bbox": [2, 1, 6, 5], "score": 0.5}
              for r in gt.images if any(o.category_id == 1 for o in r.objects)]
    (root / "p.json").write_text(json.dumps(preds))
    report = evaluate(gt, read_predictions(root / "p.json", gt), EvalConfig(bootstrap=0, auroc_positive="critical"))
    assert report["auroc_image_score"] == "max_critical_detection_score"
    assert report["auroc"] == 1.0  # with the chain boxes counted every image would score 0.99: AUROC 0.5
    anyrfo = evaluate(gt, read_predictions(root / "p.json", gt), EvalConfig(bootstrap=0))
    assert anyrfo["auroc"] == 0.5


@pytest.mark.parametrize("case", ["csv_line", "no_images", "unknown_image", "nan_score", "negative_box"])
def test_each_bad_input_is_one_line_naming_file_and_entry(small_set, capsys, case):
    root, gt_dict, _ = small_set
    gt_path, pred_path = root / "gt.json", root / "pred.json"
    entry = {"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "score": 0.5}
    expected = ""
    if case == "csv_line":
        gt_path = root / "gt.csv"
        gt_path.write_text("image_path,annotation\nim0.png,\nim1.png,0 1 2 3 4;0 5 6\n")
        pred_path.write_text("[]")
        expected = "gt.csv: line 3 object 2"
    elif case == "no_images":
        (root / "gt.json").write_text(json.dumps({k: v for k, v in gt_dict.items() if k != "images"}))
        expected = "gt.json: images"
    else:
        value = {"unknown_image": {"image_id": 404}, "nan_score": {"score": float("nan")},
                 "negative_box": {"bbox": [1, 1, -2, 2]}}[case]
        pred_path.write_text(json.dumps([entry, {**entry, **value}]))
        expected = "pred.json: [1]."
    code = main(["eval", "--gt", str(gt_path), "--pred", str(pred_path), "--out", str(root / "o"), "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_froc_strata_hand_computed(small_set):
    root, _, _ = small_set
    gt = read_coco(root / "gt.json")
    # an exact box on every object, all labelled sponge, scores falling in image order
    preds, score = [], 1.0
    for r in gt.images:
        for o in r.objects:
            x1, y1, x2, y2 = o.bbox_xyxy
            score -= 0.05
            preds.append({"image_id": r.image_id, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                          "score": score})
    (root / "p.json").write_text(json.dumps(preds))
    report = evaluate(gt, read_predictions(root / "p.json", gt), EvalConfig(bootstrap=0))
    # class-agnostic: all 8 objects hit, no false positive, no threshold reached: final sensitivity 1
    assert report["froc"]["sensitivity"] == [1.0] * 7 and report["froc"]["reference_undefined"]
    # critical task: sponges on images 1, 5, 7, 11; the points on chains (images 2, 4, 8, 10) are FPs.
    # order 1 hit, 2 FP, 4 FP (2/12 >= 0.125: 1/4), 5 hit, 7 hit, 8 FP (3/12 >= 0.25: 3/4), 10 FP, 11 hit;
    # 0.5 FP/image is never reached, so the reference repeats 3/4.
    critical = report["froc_strata"]["critical"]
    assert critical["objects"] == 4
    assert critical["sensitivity"] == [0.25] + [0.75] * 6
    assert critical["score"] == pytest.approx(4.75 / 7)
    # non-critical task: no non-critical detection at all
    assert report["froc_strata"]["non_critical"]["sensitivity"] == [0.0] * 7


def test_cli_kfold_and_yolo_from_split_file(small_set):
    import yaml

    root, _, _ = small_set
    assert main(["split", str(root / "gt.json"), "--out", str(root / "cv"), "--kfold", "3", "--seed", "1"]) == 0
    manifest = json.loads((root / "cv" / "splits.json").read_text())
    tests = [set(f["test"]) for f in manifest["folds"]]
    assert set().union(*tests) == set(range(1, 13)) and sum(map(len, tests)) == 12
    (root / "one.json").write_text(json.dumps({"splits": {"train": manifest["folds"][0]["train"],
                                                          "val": manifest["folds"][0]["test"]}}))
    assert main(["convert", str(root / "gt.json"), "--to", "yolo", "--out", str(root / "yolo"),
                 "--split-file", str(root / "one.json")]) == 0
    config = yaml.safe_load((root / "yolo" / "data.yaml").read_text())
    assert config["path"] == str((root / "yolo").resolve()) and config["names"] == {0: "sponge", 1: "chain"}
    n_val = len(list((root / "yolo" / "labels" / "val").glob("*.txt")))
    assert n_val == len(manifest["folds"][0]["test"])


@pytest.mark.parametrize("shift", [-1.0, 5.0])
def test_report_auroc_invariant_to_a_constant_score_shift(small_set, shift):
    root, _, preds = small_set
    gt = read_coco(root / "gt.json")
    # images 0 and 3 get no detection at all
    kept = [p for p in preds if p["image_id"] not in (1, 4)]
    (root / "p.json").write_text(json.dumps(kept))
    (root / "shifted.json").write_text(json.dumps([{**p, "score": p["score"] + shift} for p in kept]))
    config = EvalConfig(bootstrap=100, seed=2)
    base = evaluate(gt, read_predictions(root / "p.json", gt), config)
    shifted = evaluate(gt, read_predictions(root / "shifted.json", gt), config)
    assert shifted["auroc"] == pytest.approx(base["auroc"], rel=0, abs=1e-12)
    np.testing.assert_allclose(shifted["ci95"]["auroc"], base["ci95"]["auroc"], rtol=0, atol=1e-12)


def test_error_grid_boxes_belong_to_their_image_when_ids_are_not_in_file_order(tmp_path):
    from rfo_bench.evaluate import error_examples, evaluate_detailed

    # images listed with ids 30, 10, 20: COCO order (sorted ids) differs from file order
    images, anns, preds = [], [], []
    for k, image_id in enumerate((30, 10, 20)):
        images.append({"id": image_id, "file_name": f"im{image_id}.png", "width": 60, "height": 40})
        x = 5 + 10 * k
        anns.append({"id": k + 1, "image_id": image_id, "category_id": 1, "bbox": [x, 5, 8, 6 + k], "area": 1,
                     "iscrowd": 0})
        preds.append({"image_id": image_id, "category_id": 1, "bbox": [40, 20 + k, 5, 5], "score": 0.9 - k / 10})
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                  "categories": [{"id": 1, "name": "sponge"}]}))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    gt = read_coco(tmp_path / "gt.json")
    evaluation = evaluate_detailed(gt, read_predictions(tmp_path / "pred.json", gt), EvalConfig(bootstrap=0))
    examples = error_examples(evaluation, gt, max_examples=8)
    assert sorted(title.split()[0] for title, _, _ in examples) == ["FP"] * 3 + ["missed"] * 3
    for title, index, (x1, y1, x2, y2) in examples:
        record = gt.images[index]
        if title.startswith("missed"):
            assert [o.bbox_xyxy for o in record.objects] == [(x1, y1, x2, y2)]
        else:
            own = [p["bbox"] for p in preds if p["image_id"] == record.image_id]
            assert own == [[x1, y1, x2 - x1, y2 - y1]]


def test_eval_accepts_the_hopkins_readme_format(tmp_path, capsys):
    # absolute paths as in the Hopkins README (`/path/#####.jpg`, never opened by eval) and a
    # trailing `;` after the last object and the last prediction
    (tmp_path / "gt.csv").write_text("image_path,annotation\n/path/00001.jpg,1_1_0 10 10 30 30;\n"
                                     "/path/00002.jpg,\n/path/00003.jpg,2_0_1 50 50 70 50 60 70;\n")
    (tmp_path / "loc.csv").write_text("image_path,prediction\n/path/00001.jpg,0.9 20 20;0.2 90 90;\n"
                                      "/path/00002.jpg,0.4 5 5;\n/path/00003.jpg,0.8 60 58;\n")
    out = tmp_path / "out"
    code = main(["eval", "--gt", str(tmp_path / "gt.csv"), "--pred", str(tmp_path / "loc.csv"), "--out", str(out),
                 "--bootstrap", "0", "--no-plots"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"images": 3, "positive_images": 2, "critical_images": 1, "objects": 2,
                                "predictions": 4}
    # sorted: 0.9 hit, 0.8 hit, 0.4 FP (1/3 FP/image: 0.125 recorded at 2/2), ...
    assert report["froc"]["sensitivity"][0] == 1.0


@pytest.mark.parametrize("where", ["images", "categories", "prediction"])
def test_ids_beyond_64_bits_are_one_line_exit_2(small_set, capsys, where):
    root, gt_dict, preds = small_set
    huge = 2**64
    if where == "images":
        gt_dict["images"][0]["id"] = huge
        for ann in gt_dict["annotations"]:
            ann["image_id"] = huge if ann["image_id"] == 1 else ann["image_id"]
        preds = [{**p, "image_id": huge if p["image_id"] == 1 else p["image_id"]} for p in preds]
        expected = "gt.json: images[0].id: id does not fit a signed 64-bit integer"
    elif where == "categories":
        gt_dict["categories"][1]["id"] = 2**63
        expected = "gt.json: categories[1].id: id does not fit a signed 64-bit integer"
    else:
        preds = [*preds, {**preds[0], "category_id": -(2**63) - 1}]
        expected = f"pred.json: [{len(preds) - 1}].category_id: category id does not fit a signed 64-bit integer"
    (root / "gt.json").write_text(json.dumps(gt_dict))
    (root / "pred.json").write_text(json.dumps(preds))
    code = main(["eval", "--gt", str(root / "gt.json"), "--pred", str(root / "pred.json"), "--out", str(root / "o"),
                 "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err
