"""tools/convert_dataset.py: masks2edges and validate (the format converters have their own tests
in tests/data/formats)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mtvision.data.convert.edges import masks_to_edges
from mtvision.data.convert.validate import validate_dataset
from mtvision.data.io import DataError, read_label_map
from mtvision.data.synthetic import generate_shapes
from tools.convert_dataset import main


def test_masks2edges_semantic_palette_and_16bit(tmp_path: Path) -> None:
    src = tmp_path / "labels"
    (src / "sub").mkdir(parents=True)
    sem = np.zeros((6, 8), np.uint8)
    sem[:, 4:] = 3
    sem[0, 0] = 255
    cv2.imwrite(str(src / "a.png"), sem)
    # A palette PNG must give its indices, not colours.
    pal = Image.fromarray(sem, mode="P")
    pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [255] * (252 * 3))
    pal.save(src / "sub" / "b.png")
    inst = np.zeros((6, 8), np.uint16)
    inst[1:5, 1:4] = 26001
    inst[1:5, 4:7] = 26002  # touching instance of the same class
    cv2.imwrite(str(src / "sub" / "c.png"), inst)
    np.testing.assert_array_equal(read_label_map(src / "sub" / "b.png"), sem)

    summary = masks_to_edges(src, tmp_path / "edges", thickness=1, progress=False)
    assert summary["images"] == 3
    a = cv2.imread(str(tmp_path / "edges" / "a.png"), cv2.IMREAD_UNCHANGED)
    expected = np.zeros((6, 8), np.uint8)
    expected[:, 4] = 255  # hand-computed: the column after the change
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "edges/sub/b.png"), 0), expected)
    c = cv2.imread(str(tmp_path / "edges/sub/c.png"), 0)
    assert c[2, 4] == 255  # between the two instances
    assert c[2, 1] == 255 and c[2, 2] == 0  # outline of the first, not its inside


def test_masks2edges_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="source folder .* not found"):
        masks_to_edges(tmp_path / "nope", tmp_path / "out", progress=False)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="x.png'.*not a decodable image"):
        masks_to_edges(tmp_path / "src", tmp_path / "out", progress=False)


def test_validate_reports_every_problem_and_statistics(tmp_path: Path, capsys) -> None:
    root = tmp_path / "shapes"
    generate_shapes(root, num_train=6, num_val=1, image_size=48, seed=3)
    ann_file = root / "annotations" / "train.json"
    data = json.loads(ann_file.read_text())
    counts: dict[int, int] = {}
    for ann in data["annotations"]:
        counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
    names = {c["id"]: c["name"] for c in data["categories"]}

    report = validate_dataset(root, "mtvision", "train", progress=False)
    assert report["images"] == 6 and report["valid_images"] == 6 and not report["problems"]
    assert report["stats"]["instances"] == {names[k]: v for k, v in sorted(counts.items())}
    assert report["stats"]["tasks"] == {"det": 6, "seg": 6, "edge": 6, "cls": 6}

    # Break three samples in three ways: all three are reported, the rest still counted.
    (root / "images" / "train" / data["images"][0]["file_name"]).write_bytes(b"garbage")
    data["annotations"][0]["bbox"] = [5, 5, 0, 4]  # degenerate
    first_bad_img = data["annotations"][0]["image_id"]
    cv2.imwrite(str(root / data["images"][5]["seg_file"]), np.full((48, 48), 9, np.uint8))
    ann_file.write_text(json.dumps(data))
    report = validate_dataset(root, "mtvision", "train", progress=False)
    problems = [p["problem"] for p in report["problems"]]
    assert any("not a decodable image" in p for p in problems)
    assert any("class id 9 out of range" in p for p in problems)
    if first_bad_img != data["images"][0]["id"]:
        assert any("degenerate" in p for p in problems)
    assert report["valid_images"] == 6 - report["problems_total"]

    out = tmp_path / "report.json"
    code = main(["--no-progress", "validate", str(root), "--format", "mtvision",
                 "--json", str(out)])
    assert code == 1
    printed = capsys.readouterr().out
    assert "problems" in printed and "instances per class" in printed
    assert json.loads(out.read_text())["problems_total"] == report["problems_total"]


def test_validate_unknown_format_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["validate", str(tmp_path), "--format", "cocoo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown dataset format 'cocoo'") and "\n" not in err
