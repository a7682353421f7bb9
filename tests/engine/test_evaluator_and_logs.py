"""Evaluation helpers: summary score, the results table, the run log and its plot."""

import copy
import json

import cv2
import numpy as np
import pytest
import torch

from mtvision.engine.evaluator import format_table, summary_score
from mtvision.engine.logger import RunLogger, plot_training_curves, read_jsonl

RESULTS = {"det": {"mAP": 0.4, "mAP50": 0.7}, "seg": {"mIoU": 0.6, "pixel_acc": 0.9,
                                                     "per_class_IoU": {"a": 0.5}},
           "edge": {"ODS": 0.8, "OIS": 0.85, "AP": 0.7}, "cls": {"top1": 0.9}}


def test_summary_score_is_mean_of_headline_metrics():
    assert summary_score(RESULTS) == pytest.approx((0.4 + 0.6 + 0.8 + 0.9) / 4)
    assert summary_score(RESULTS, "det.mAP50") == pytest.approx(0.7)


def test_table_has_one_row_per_scalar_metric():
    lines = format_table(RESULTS, per_class=False).splitlines()
    assert lines[0].split() == ["task", "metric", "value"]
    rows = [line.split() for line in lines[2:]]
    assert ["seg", "mIoU", "0.6000"] in rows
    assert len(rows) == 8  # per_class_IoU (a dict) is not a row
    nested = {"det": {"mAP": 0.4, "coco": {"AP": 0.25, "per_class": {"x": 0.1}}}}
    assert ["det", "coco.AP", "0.2500"] in [r.split() for r in format_table(nested).splitlines()]


def test_table_ends_with_the_per_class_segmentation_table():
    text = format_table(RESULTS)
    tail = text.split("seg per class:")[1].splitlines()
    # class a: IoU 50.00 %; the mean row repeats mIoU (60.00 %).
    assert ["a", "50.00", "-"] in [r.split() for r in tail]
    assert ["mean", "60.00", "-"] in [r.split() for r in tail]


def test_log_and_curves(tmp_path):
    log = RunLogger(tmp_path, tensorboard=False)
    for i in range(1, 6):
        log.log({"type": "train", "iter": i, "losses": {"det": 1.0 / i, "seg": 2.0 / i}})
    log.log({"type": "eval", "iter": 5, "metrics": RESULTS})
    with open(log.path, "a") as f:
        f.write('{"type": "train", "iter": 6, "los')  # a line cut by a kill
    records = read_jsonl(log.path)
    assert len(records) == 6 and records[-1]["type"] == "eval"
    assert json.loads(log.path.read_text().splitlines()[0])["losses"]["seg"] == 2.0
    png = plot_training_curves(log.path, tmp_path / "curves.png")
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


# -- COCO-format data: the box AP follows the annotation file (areas, crowds), not the letterbox


class _ReplayModel(torch.nn.Module):
    """A stand-in model whose ``predict`` returns the given outputs, one batch per call."""

    def __init__(self, tasks: list[str], outputs: list[dict]) -> None:
        super().__init__()
        self.task_names = tasks
        self.outputs = iter(outputs)

    def predict(self, images: torch.Tensor) -> dict:
        return next(self.outputs)


def _coco_dir(tmp_path, images: list[dict], anns: list[dict]) -> None:
    (tmp_path / "s").mkdir()
    for im in images:
        cv2.imwrite(str(tmp_path / "s" / im["file_name"]),
                    np.zeros((im["height"], im["width"], 3), np.uint8))
    (tmp_path / "annotations").mkdir()
    cats = [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]
    (tmp_path / "annotations" / "instances_s.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": cats}))


def test_coco_box_ap_uses_the_annotation_areas_and_crowds(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from mtvision.data.collate import collate
    from mtvision.data.formats.coco import CocoDataset
    from mtvision.data.transforms import build_transforms
    from mtvision.engine.evaluator import evaluate

    # A 200x100 image letterboxed to 64x64: scale 0.32, no side padding, 16 rows on top.
    images = [{"id": 5, "file_name": "a.png", "width": 200, "height": 100}]
    anns = [
        # Box 50x50 = 2500 (medium); letterboxed 256 px^2 (small).
        {"id": 1, "image_id": 5, "category_id": 3, "bbox": [10, 10, 50, 50], "area": 2500,
         "iscrowd": 0},
        # Box 110x95 (letterboxed 1070 px^2: medium) but a thin object: area 900 (small).
        {"id": 2, "image_id": 5, "category_id": 7, "bbox": [80, 2, 110, 95], "area": 900,
         "iscrowd": 0},
        # A crowd region: detections inside it are neither true nor false positives.
        {"id": 3, "image_id": 5, "category_id": 3, "bbox": [0, 62, 70, 36], "area": 2000,
         "iscrowd": 1},
    ]
    _coco_dir(tmp_path, images, anns)
    # Detections in original pixels (xyxy), label = contiguous index of category ids [3, 7].
    orig = np.array([[10, 10, 60, 60], [90, 10, 190, 90], [5, 65, 45, 95], [120, 5, 150, 40]],
                    np.float64)
    scores = np.array([0.9, 0.8, 0.95, 0.85])
    labels = np.array([0, 1, 0, 0])
    inp = orig * 0.32 + np.array([0, 16, 0, 16])
    pred = {"det": [{"boxes": torch.tensor(inp, dtype=torch.float32),
                     "scores": torch.tensor(scores, dtype=torch.float32),
                     "labels": torch.tensor(labels)}]}
    ds = CocoDataset(tmp_path, "s", transforms=build_transforms(None, (64, 64), train=False))
    loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=collate)
    model_cfg = {"heads": {"det": {"num_classes": 2}}}
    res = evaluate(_ReplayModel(["det"], [pred]), loader, model_cfg, {"det": ["a", "b"]},
                   {}, torch.device("cpu"), progress=False)

    # The reference: pycocotools on the annotation file and the original-pixel detections.
    gt = COCO(str(tmp_path / "annotations" / "instances_s.json"))
    dt = gt.loadRes([{"image_id": 5, "category_id": [3, 7][lab], "score": float(s),
                      "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
                     for b, s, lab in zip(orig.tolist(), scores, labels, strict=True)])
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    ref = dict(zip(("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large"),
                   ev.stats[:6], strict=True))
    for name, value in ref.items():
        if value < 0:  # no ground truth in that range
            assert np.isnan(res["det"][name]), name
        else:
            assert res["det"][name] == pytest.approx(value, abs=1e-6), name
    # By the annotations' areas the medium object (a) is found first and the small one (b) at
    # a lower IoU; the letterboxed areas would have swapped the two ranges.
    assert ref["mAP_medium"] > 0.9 and ref["mAP_small"] < ref["mAP_medium"]
    assert res["det"]["coco"]["AP"] == pytest.approx(ref["mAP"], abs=1e-6)


# -- seg, depth and normals scored at each image's original size (eval.dense_protocol)


class _DenseModel(torch.nn.Module):
    """A stand-in model with fixed outputs at the input size (seg logits, depth, normals) and
    the heads' postprocessing (arg-max; the maps as they are)."""

    task_names = ["seg", "depth", "normals"]

    def __init__(self, outputs: dict) -> None:
        super().__init__()
        self.outputs = outputs

    def forward(self, images: torch.Tensor, tasks=None) -> dict:
        return {t: o.to(images.device) for t, o in self.outputs.items()}

    def postprocess(self, outputs: dict, image_size) -> dict:
        return {"seg": list(outputs["seg"].argmax(1)), "depth": list(outputs["depth"][:, 0]),
                "normals": list(outputs["normals"])}

    def predict(self, images: torch.Tensor) -> dict:
        return self.postprocess(self(images), tuple(images.shape[-2:]))


def _dense_dataset(raw):
    from mtvision.data.base import ReaderDataset
    from mtvision.data.transforms import build_transforms

    class _One(ReaderDataset):
        def __init__(self) -> None:
            super().__init__("mem", "val", build_transforms(None, (16, 16), train=False))
            self._setup(["seg", "depth", "normals"], seg_classes=["a", "b", "c"])

        def __len__(self) -> int:
            return 1

        def read(self, index: int):
            return copy.deepcopy(raw)

    return _One()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_dense_tasks_scored_at_the_original_size(device):
    from mtvision.data.collate import collate
    from mtvision.data.sample import RawSample
    from mtvision.engine.evaluator import evaluate

    rng = np.random.default_rng(0)
    # A 4x8 image letterboxed to 16x16: scale 2, content in rows 4..11, no side padding.
    h, w = 4, 8
    seg = rng.integers(0, 3, (h, w)).astype(np.uint8)
    seg[0, 0] = 255
    depth = rng.uniform(1, 5, (h, w)).astype(np.float32)
    depth[1, 2] = 0  # invalid
    normals = rng.normal(size=(h, w, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[2, 3] = 0  # invalid
    raw = RawSample(image=np.zeros((h, w, 3), np.uint8), image_id=1, file_name="x.png",
                    seg=seg, depth=depth, normals=normals)
    out = {"seg": torch.tensor(rng.normal(size=(1, 3, 16, 16)), dtype=torch.float32),
           "depth": torch.tensor(rng.uniform(1, 5, (1, 1, 16, 16)), dtype=torch.float32),
           "normals": torch.tensor(rng.normal(size=(1, 3, 16, 16)), dtype=torch.float32)}
    model_cfg = {"heads": {"seg": {"num_classes": 3}, "depth": {}, "normals": {}}}

    def run(protocol: str) -> dict:
        loader = torch.utils.data.DataLoader(_dense_dataset(raw), batch_size=1,
                                             collate_fn=collate)
        return evaluate(_DenseModel(out), loader, model_cfg, {"seg": ["a", "b", "c"]},
                        {"dense_protocol": protocol}, torch.device(device), progress=False)

    res = run("original")
    # The reference: halving a 2x upscale bilinearly (half-pixel centres) is the mean of each
    # 2x2 block of the letterbox's image rows.
    def back(x: torch.Tensor) -> np.ndarray:
        crop = x[0, :, 4:12, :].double().numpy()
        return crop.reshape(crop.shape[0], h, 2, w, 2).mean(axis=(2, 4))

    pred_seg = back(out["seg"]).argmax(0)
    valid = seg != 255
    ious = []
    for c in range(3):
        inter = np.sum((pred_seg == c) & (seg == c) & valid)
        union = np.sum(((pred_seg == c) | (seg == c)) & valid)
        if union:
            ious.append(inter / union)
    assert res["seg"]["mIoU"] == pytest.approx(np.mean(ious), abs=1e-9)
    assert res["seg"]["pixel_acc"] == pytest.approx(np.mean(pred_seg[valid] == seg[valid]))
    pred_d = back(out["depth"])[0]
    ok = depth > 0
    assert res["depth"]["abs_err"] == pytest.approx(np.abs(pred_d - depth)[ok].mean(), abs=1e-5)
    assert res["depth"]["rmse"] == pytest.approx(
        np.sqrt(((pred_d - depth)[ok] ** 2).mean()), abs=1e-5)
    pred_n = back(out["normals"]).transpose(1, 2, 0)
    pred_n /= np.linalg.norm(pred_n, axis=-1, keepdims=True)
    ok = np.any(normals != 0, axis=-1)
    cos = np.clip(np.sum(pred_n * normals, axis=-1)[ok], -1, 1)
    assert res["normals"]["mean_angle"] == pytest.approx(np.degrees(np.arccos(cos)).mean(),
                                                         abs=1e-3)
    # The fast protocol (input size, nearest-resized labels) gives other numbers.
    fast = run("fast")
    assert fast["depth"]["abs_err"] != pytest.approx(res["depth"]["abs_err"], abs=1e-3)
    assert fast["normals"]["mean_angle"] != pytest.approx(res["normals"]["mean_angle"],
                                                          abs=1e-2)
