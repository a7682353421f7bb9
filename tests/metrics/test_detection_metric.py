import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mtvision.metrics import DetectionMetric, build_metric
from mtvision.metrics.detection import STAT_NAMES, coco_evaluate, coco_results


def gt(boxes: list[list[float]], labels: list[int]) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.long)}


def det(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores), "labels": torch.tensor(labels, dtype=torch.long)}


ALL = torch.tensor([True])


def test_perfect_predictions():
    targets = [gt([[10, 10, 60, 80], [100, 20, 180, 90]], [0, 2]), gt([[5, 5, 50, 50]], [1])]
    preds = [det([[10, 10, 60, 80], [100, 20, 180, 90]], [0.9, 0.8], [0, 2]),
             det([[5, 5, 50, 50]], [0.7], [1])]
    m = DetectionMetric(3, class_names=["a", "b", "c"])
    m.update(preds, targets, torch.tensor([True, True]))
    out = m.compute()
    assert out["mAP"] == pytest.approx(1.0) and out["mAP50"] == pytest.approx(1.0)
    assert out["per_class"] == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0})


def test_shifted_box_counts_at_low_iou_thresholds_only():
    # Shift by 24 px: IoU = 76*100 / (124*100) = 0.613 -> a hit at IoU .50, .55, .60 and a
    # miss at .65 ... .95, so AP is 1 at 3 of the 10 thresholds and 0 at the others.
    m = DetectionMetric(1)
    m.update([det([[24, 0, 124, 100]], [0.9], [0])], [gt([[0, 0, 100, 100]], [0])], ALL)
    out = m.compute()
    assert out["mAP50"] == pytest.approx(1.0)
    assert out["mAP"] == pytest.approx(3 / 10)


def test_wrong_class_scores_zero():
    m = DetectionMetric(2)
    m.update([det([[0, 0, 100, 100]], [0.9], [1])], [gt([[0, 0, 100, 100]], [0])], ALL)
    out = m.compute()
    assert out["mAP"] == 0.0 and out["mAP50"] == 0.0
    assert out["per_class"]["0"] == 0.0 and math.isnan(out["per_class"]["1"])  # 1: no gt


def test_no_predictions_at_all():
    m = DetectionMetric(2)
    m.update([det([], [], [])], [gt([[0, 0, 10, 10]], [0])], ALL)
    out = m.compute()
    assert out["mAP"] == 0.0 and out["mAP50"] == 0.0 and out["per_class"]["0"] == 0.0


def test_false_positive_on_image_without_gt():
    # Image 2 has no boxes; its detection outranks the true positive of image 1, so at
    # recall 1 precision is 1/2 and COCO's interpolated precision is 1/2 at every recall.
    preds = [det([[0, 0, 50, 50]], [0.5], [0]), det([[0, 0, 50, 50]], [0.9], [0])]
    targets = [gt([[0, 0, 50, 50]], [0]), gt([], [])]
    m = DetectionMetric(1)
    m.update(preds, targets, torch.tensor([True, True]))
    assert m.compute()["mAP50"] == pytest.approx(0.5)
    # With the false positive ranked last precision stays 1 up to full recall.
    preds[1]["scores"] = torch.tensor([0.1])
    m.reset()
    m.update(preds, targets, torch.tensor([True, True]))
    assert m.compute()["mAP"] == pytest.approx(1.0)


def test_no_ground_truth_in_dataset():
    m = DetectionMetric(2)
    m.update([det([[0, 0, 10, 10]], [0.9], [0])], [gt([], [])], ALL)
    out = m.compute()
    assert out["mAP"] == 0.0 and out["mAP50"] == 0.0
    assert DetectionMetric(2).compute()["mAP"] == 0.0  # nothing seen


def test_present_mask_excludes_images():
    preds = [det([[0, 0, 50, 50]], [0.9], [0]), det([[200, 200, 220, 220]], [0.99], [0])]
    targets = [gt([[0, 0, 50, 50]], [0]), gt([[0, 0, 50, 50]], [0])]
    m = DetectionMetric(1)
    m.update(preds, targets, torch.tensor([True, False]))
    assert m.num_samples == 1
    assert m.compute()["mAP"] == pytest.approx(1.0)


def test_compute_prints_nothing(capsys):
    m = DetectionMetric(1)
    m.update([det([[0, 0, 50, 50]], [0.9], [0])], [gt([[0, 0, 50, 50]], [0])], ALL)
    m.compute()
    assert capsys.readouterr().out == ""


def test_build_metric_det():
    m = build_metric("det", num_classes=2, class_names=["x", "y"], multi_label=False)
    assert isinstance(m, DetectionMetric) and m.class_names == ["x", "y"]
    assert m.cat_ids == [1, 2]
    assert build_metric("det", class_names=["x", "y"], cat_ids=[5, 9]).cat_ids == [5, 9]


# --- masks, crowd regions, the COCO results format and evaluation --------------------------


def box_mask(box: list[float], size: tuple[int, int] = (120, 160)) -> np.ndarray:
    m = np.zeros(size, dtype=np.uint8)
    x0, y0, x1, y1 = (int(v) for v in box)
    m[y0:y1, x0:x1] = 1
    return m


def pycocotools_stats(gt: dict, dets: list[dict], iou_type: str = "bbox") -> np.ndarray:
    """The reference: pycocotools run directly on a GT dict and a results list."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_perfect_predictions_with_masks():
    boxes = [[10, 10, 60, 80], [100, 20, 150, 90]]
    masks = np.stack([box_mask(b) for b in boxes])
    masks[0, 10:30, 10:30] = 0  # not a rectangle
    target = {**gt(boxes, [0, 1]), "masks": torch.from_numpy(masks)}
    pred = {**det(boxes, [0.9, 0.8], [0, 1]), "masks": torch.from_numpy(masks.astype(bool))}
    m = DetectionMetric(2)
    m.update([pred], [target])
    out = m.compute()
    for key in ("mAP", "mAP50", "mAP75", "mask_mAP", "mask_mAP50", "mask_mAP75"):
        assert out[key] == pytest.approx(1.0), key
    # The boxes are medium sized (32^2 .. 96^2 px), COCO's area ranges from the mask areas.
    assert out["mAP_medium"] == pytest.approx(1.0) and math.isnan(out["mAP_small"])
    # Without masks on the predictions there is no mask AP.
    m = DetectionMetric(2)
    m.update([det(boxes, [0.9, 0.8], [0, 1])], [target])
    assert "mask_mAP" not in m.compute()


def crowd_case() -> tuple[dict, list[dict]]:
    """One person box and one crowd region (iscrowd) of people, as hand-written COCO JSON, and
    detections: the person found (score .5) and, ranked above it, the crowd region (.9)."""
    person, crowd = [10, 10, 60, 80], [80, 20, 150, 100]
    size = (120, 160)

    def rle(box):
        r = mask_utils.encode(np.asfortranarray(box_mask(box, size)))
        r["counts"] = r["counts"].decode()
        return r

    gt_json = {
        "images": [{"id": 5, "height": size[0], "width": size[1]}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 1, "bbox": [10, 10, 50, 70],
             "area": 3500.0, "iscrowd": 0, "segmentation": rle(person)},
            {"id": 2, "image_id": 5, "category_id": 1, "bbox": [80, 20, 70, 80],
             "area": 5600.0, "iscrowd": 1, "segmentation": rle(crowd)},
        ],
    }
    dets = [
        {"image_id": 5, "category_id": 1, "bbox": [10, 10, 50, 70], "score": 0.5},
        {"image_id": 5, "category_id": 1, "bbox": [90, 30, 50, 60], "score": 0.9},
    ]
    return gt_json, dets


def test_detection_on_crowd_region_is_ignored():
    gt_json, dets = crowd_case()
    ref = pycocotools_stats(gt_json, dets)
    assert ref[0] == pytest.approx(1.0)  # the crowd detection is neither TP nor FP

    pred = det([[10, 10, 60, 80], [90, 30, 140, 90]], [0.5, 0.9], [0, 0])
    target = {**gt([[10, 10, 60, 80]], [0]),
              "crowd_boxes": torch.tensor([[80.0, 20, 150, 100]]),
              "crowd_labels": torch.tensor([0])}
    m = DetectionMetric(1, class_names=["person"])
    m.update([pred], [target])
    out = m.compute()
    assert [out["mAP"], out["mAP50"], out["mAP75"]] == pytest.approx(list(ref[:3]))
    assert out["per_class"] == {"person": pytest.approx(1.0)}

    # Without the crowd region the same detection is a false positive ranked first.
    no_crowd = {**gt_json, "annotations": gt_json["annotations"][:1]}
    assert pycocotools_stats(no_crowd, dets)[1] == pytest.approx(0.5)
    m.reset()
    m.update([pred], [gt([[10, 10, 60, 80]], [0])])
    assert m.compute()["mAP50"] == pytest.approx(0.5)


def test_crowd_region_with_masks():
    gt_json, dets = crowd_case()
    person, inside = [10, 10, 60, 80], [90, 30, 140, 90]
    seg_dets = [{**d, "segmentation": coco_results(
        [{"boxes": [b], "scores": [d["score"]], "labels": [0], "masks": box_mask(b)[None]}],
        [5])[0]["segmentation"]} for d, b in zip(dets, (person, inside), strict=True)]
    ref = pycocotools_stats(gt_json, [{k: v for k, v in d.items() if k != "bbox"}
                                      for d in seg_dets], "segm")
    assert ref[0] == pytest.approx(1.0)
    pred = {**det([person, inside], [0.5, 0.9], [0, 0]),
            "masks": np.stack([box_mask(person), box_mask(inside)])}
    target = {**gt([person], [0]), "masks": box_mask(person)[None],
              "crowd_boxes": [[80.0, 20, 150, 100]], "crowd_labels": [0],
              "crowd_masks": box_mask([80, 20, 150, 100])[None]}
    m = DetectionMetric(1)
    m.update([pred], [target])
    out = m.compute()
    assert out["mask_mAP"] == pytest.approx(ref[0]) and out["mAP"] == pytest.approx(1.0)
    # A crowd region given by its box only is its box as a mask.
    del target["crowd_masks"]
    m.reset()
    m.update([pred], [target])
    assert m.compute()["mask_mAP"] == pytest.approx(1.0)


def test_coco_results_format():
    masks = np.zeros((2, 20, 30), dtype=np.uint8)
    masks[0, 2:5, 3:9] = 1
    masks[1, 10:, :4] = 1
    pred = {"boxes": torch.tensor([[3.0, 2, 9, 5], [0, 10, 4, 20]]),
            "scores": torch.tensor([0.7, 0.2]), "labels": torch.tensor([1, 0]),
            "masks": torch.from_numpy(masks)}
    res = coco_results([pred], [123], cat_ids=[7, 90])
    assert [r["category_id"] for r in res] == [90, 7]
    assert res[0]["bbox"] == [3.0, 2.0, 6.0, 3.0] and res[0]["image_id"] == 123
    assert res[0]["score"] == pytest.approx(0.7)
    json.dumps(res)  # JSON-ready: the RLE counts are str
    for r, m in zip(res, masks, strict=True):
        assert isinstance(r["segmentation"]["counts"], str)
        assert r["segmentation"]["size"] == [20, 30]
        np.testing.assert_array_equal(mask_utils.decode(r["segmentation"]), m)
    plain = coco_results([det([[0, 0, 4, 4]], [0.5], [2])], [1])
    assert plain == [{"image_id": 1, "category_id": 3, "bbox": [0.0, 0.0, 4.0, 4.0],
                      "score": 0.5}]
    with pytest.raises(ValueError, match="labels"):
        coco_results([det([[0, 0, 4, 4]], [0.5], [2])], [1], cat_ids=[1, 2])
    with pytest.raises(ValueError, match="image ids"):
        coco_results([pred], [1, 2])


def mapping_case() -> tuple[dict, list[dict], list[dict]]:
    """COCO categories 1, 3, 90 over two images (one crowd region), contiguous-label targets
    and predictions (labels 0, 1, 2 stand for 1, 3, 90)."""
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 90, "name": "brush"}]
    anns = [  # image id, category id, xyxy, iscrowd
        (42, 1, [0, 0, 40, 80], 0), (42, 3, [50, 50, 150, 100], 0), (42, 90, [5, 90, 20, 110], 0),
        (42, 1, [100, 0, 160, 40], 1), (7, 3, [10, 10, 70, 50], 0), (7, 3, [80, 10, 140, 60], 0),
    ]
    gt_json = {"images": [{"id": 42, "height": 120, "width": 160},
                          {"id": 7, "height": 120, "width": 160}],
               "categories": cats,
               "annotations": [{"id": i + 1, "image_id": im, "category_id": c,
                                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": crowd}
                               for i, (im, c, b, crowd) in enumerate(anns)]}
    label = {1: 0, 3: 1, 90: 2}
    targets = []
    for im in (42, 7):
        own = [a for a in anns if a[0] == im]
        normal, crowd = [a for a in own if not a[3]], [a for a in own if a[3]]
        targets.append({"boxes": torch.tensor([a[2] for a in normal], dtype=torch.float32),
                        "labels": torch.tensor([label[a[1]] for a in normal]),
                        "crowd_boxes": torch.tensor([a[2] for a in crowd],
                                                    dtype=torch.float32).reshape(-1, 4),
                        "crowd_labels": torch.tensor([label[a[1]] for a in crowd])})
    preds = [  # person found; car shifted (IoU .74); brush missed; a person on the crowd;
        # a wrong-class car
        det([[1, 0, 40, 80], [60, 50, 160, 100], [105, 5, 150, 40], [0, 0, 40, 80]],
            [0.9, 0.8, 0.95, 0.3], [0, 1, 0, 1]),
        det([[10, 10, 70, 50], [80, 12, 140, 60], [0, 60, 30, 100]], [0.6, 0.7, 0.65],
            [1, 1, 1]),
    ]
    return gt_json, targets, preds


def test_category_mapping_round_trip():
    gt_json, targets, preds = mapping_case()
    results = coco_results(preds, [42, 7], cat_ids=[1, 3, 90])
    assert [r["category_id"] for r in results] == [1, 3, 1, 3, 3, 3, 3]

    # The reference: pycocotools on hand-written detections in COCO ids (xywh).
    hand = [(42, 1, [1, 0, 39, 80], 0.9), (42, 3, [60, 50, 100, 50], 0.8),
            (42, 1, [105, 5, 45, 35], 0.95), (42, 3, [0, 0, 40, 80], 0.3),
            (7, 3, [10, 10, 60, 40], 0.6), (7, 3, [80, 12, 60, 48], 0.7),
            (7, 3, [0, 60, 30, 40], 0.65)]
    ref = pycocotools_stats(gt_json, [{"image_id": i, "category_id": c, "bbox": b, "score": s}
                                      for i, c, b, s in hand])
    assert 0 < ref[0] < 1

    out = coco_evaluate(gt_json, results)["bbox"]
    np.testing.assert_allclose([out[k] for k in STAT_NAMES], np.where(ref > -1, ref, np.nan))
    assert set(out["per_class"]) == {"person", "car", "brush"}
    assert out["per_class"]["brush"] == 0.0  # missed

    m = DetectionMetric(3, class_names=["person", "car", "brush"], cat_ids=[1, 3, 90])
    m.update(preds, targets)
    mem = m.compute()
    assert [mem["mAP"], mem["mAP50"], mem["mAP75"]] == pytest.approx(list(ref[:3]))
    assert mem["per_class"] == pytest.approx(out["per_class"])
    assert [r["category_id"] for r in m.coco_results()] == [1, 3, 1, 3, 3, 3, 3]


def test_coco_evaluate_empty_results_and_bad_type():
    gt_json, _, _ = mapping_case()
    out = coco_evaluate(gt_json, [], iou_types=("bbox", "segm"))
    assert all(out[t][k] == 0.0 for t in ("bbox", "segm") for k in STAT_NAMES)
    assert out["bbox"]["per_class"] == {"person": 0.0, "car": 0.0, "brush": 0.0}
    with pytest.raises(ValueError, match="iou type"):
        coco_evaluate(gt_json, [], iou_types=("keypoints",))


def test_real_coco_annotations_scored_as_their_own_results(samples_dir):
    path = samples_dir / "coco" / "annotations.json"
    if not path.is_file():
        pytest.skip("COCO sample annotations not in the repository")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    cat_ids = sorted(coco.getCatIds())
    assert len(cat_ids) == 80
    image_ids = sorted(coco.getImgIds())
    preds, crowd_seen = [], 0
    for img in image_ids:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img]))
        # Every non-crowd annotation as a detection of score 1, and the crowd region too: it
        # must be ignored (matched to the crowd annotation), not counted as a false positive.
        crowd_seen += sum(a["iscrowd"] for a in anns)
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                  a["bbox"][1] + a["bbox"][3]] for a in anns]
        preds.append({"boxes": np.array(boxes).reshape(-1, 4), "scores": np.ones(len(anns)),
                      "labels": np.array([cat_ids.index(a["category_id"]) for a in anns]),
                      "masks": np.array([coco.annToMask(a) for a in anns], dtype=np.uint8)
                      .reshape(-1, coco.imgs[img]["height"], coco.imgs[img]["width"])})
    assert crowd_seen == 1
    results = coco_results(preds, image_ids, cat_ids)
    out = coco_evaluate(path, results, iou_types=("bbox", "segm"))
    used = {coco.cats[a["category_id"]]["name"] for a in coco.dataset["annotations"]}
    for t in ("bbox", "segm"):
        assert [out[t]["AP"], out[t]["AP50"], out[t]["AP75"]] == pytest.approx([1, 1, 1]), t
        per_class = out[t]["per_class"]
        assert all(per_class[n] == pytest.approx(1.0) for n in used)
        assert sum(math.isnan(v) for v in per_class.values()) == 80 - len(used)


def test_faster_coco_eval_agrees_with_pycocotools(samples_dir):
    """faster-coco-eval (the default backend where installed) against pycocotools, the
    reference, to 1e-6: jittered detections and false positives on the real COCO sample
    annotations (boxes; masks as the boxes' RLEs), and the crowd case."""
    pytest.importorskip("faster_coco_eval")
    path = samples_dir / "coco" / "annotations.json"
    if not path.is_file():
        pytest.skip("COCO sample annotations not in the repository")
    gt_json = json.loads(path.read_text())
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt_json["images"]}
    cats = sorted(c["id"] for c in gt_json["categories"])
    rng = np.random.default_rng(0)
    dets = []
    for a in gt_json["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(2):
            j = rng.normal(0, 0.1, 4) * [w, h, w, h]
            dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                         "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])],
                         "score": float(rng.uniform())})
    for im in gt_json["images"]:
        for _ in range(5):
            dets.append({"image_id": im["id"], "category_id": int(rng.choice(cats)),
                         "bbox": [float(rng.uniform(0, 200)), float(rng.uniform(0, 200)),
                                  40.0, 30.0], "score": float(rng.uniform())})
    for d in dets:
        h, w = sizes[d["image_id"]]
        rle = mask_utils.frPyObjects(np.array([d["bbox"]], np.float64), h, w)[0]
        d["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
    crowd_gt, crowd_dets = crowd_case()
    for gt_case, det_case, types in ((gt_json, dets, ("bbox", "segm")),
                                     (crowd_gt, crowd_dets, ("bbox",))):
        fast = coco_evaluate(gt_case, det_case, types, backend="faster-coco-eval")
        for t in types:
            ref = pycocotools_stats(gt_case, [{k: v for k, v in d.items()
                                               if k != ("segmentation" if t == "bbox"
                                                        else "bbox")} for d in det_case], t)
            assert 0 < ref[0] < 1 or gt_case is crowd_gt
            np.testing.assert_allclose([fast[t][k] for k in STAT_NAMES],
                                       np.where(ref > -1, ref, np.nan), atol=1e-6, rtol=0)
            slow = coco_evaluate(gt_case, det_case, (t,), backend="pycocotools")[t]
            for name, ap in slow["per_class"].items():
                assert fast[t]["per_class"][name] == pytest.approx(ap, abs=1e-6, nan_ok=True)
