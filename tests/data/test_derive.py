"""Derived labels: semantic maps from instances, edges from label maps and annotators."""

from __future__ import annotations

import numpy as np
import pytest

from mtvision.data.derive import (
    edges_from_annotators,
    edges_from_instances,
    edges_from_labels,
    semantic_from_instances,
)
from mtvision.data.polygons import mask_to_box, mask_to_polygons, polygons_to_mask


def _slow_edges(labels: np.ndarray, thickness: int, ignore: int | None) -> np.ndarray:
    """Reference: a pixel is an edge if a non-ignored pixel in its window has another label.

    The window of a (thickness + 1)-wide kernel as OpenCV anchors it: offsets
    -((t + 1) // 2) .. t // 2 (for an even width the anchor is the centre-right pixel).
    """
    h, w = labels.shape
    k = thickness + 1
    lo, hi = -(k // 2), k - 1 - k // 2
    out = np.zeros((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            if ignore is not None and labels[y, x] == ignore:
                out[y, x] = 255
                continue
            vals = {int(labels[yy, xx])
                    for yy in range(max(0, y + lo), min(h, y + hi + 1))
                    for xx in range(max(0, x + lo), min(w, x + hi + 1))
                    if ignore is None or labels[yy, xx] != ignore}
            out[y, x] = len(vals) > 1
    return out


def test_edges_one_pixel_per_label_change() -> None:
    lab = np.zeros((6, 8), np.uint8)
    lab[:, 4:] = 2
    e = edges_from_labels(lab, thickness=1)
    # Hand-computed: only the column after the change (x = 4) is an edge.
    expected = np.zeros((6, 8), np.uint8)
    expected[:, 4] = 1
    np.testing.assert_array_equal(e, expected)
    e2 = edges_from_labels(lab, thickness=2)
    expected[:, 3] = 1
    np.testing.assert_array_equal(e2, expected)


@pytest.mark.parametrize("thickness", [1, 2, 3])
def test_edges_match_reference_with_ignore(thickness: int) -> None:
    rng = np.random.default_rng(thickness)
    lab = rng.integers(0, 3, (9, 11)).astype(np.uint8)
    lab[2:5, 3:6] = 255
    np.testing.assert_array_equal(edges_from_labels(lab, thickness),
                                  _slow_edges(lab, thickness, 255))


def test_semantic_from_instances_small_on_top_and_crowd_ignored() -> None:
    big = np.zeros((10, 10), np.uint8)
    big[1:9, 1:9] = 1
    small = np.zeros((10, 10), np.uint8)
    small[3:5, 3:5] = 1
    crowd = np.zeros((1, 10, 10), np.uint8)
    crowd[0, 9, :] = 1
    sem = semantic_from_instances(np.stack([small, big]), np.array([4, 0]), (10, 10), crowd)
    assert sem[3, 3] == 5 and sem[1, 1] == 1 and sem[0, 0] == 0
    assert (sem[9] == 255).all()
    assert (sem[9, :] != 0).all() and sem[8, 0] == 0


def test_instance_edges_separate_touching_objects_of_one_class() -> None:
    a = np.zeros((8, 8), np.uint8)
    a[2:6, 0:4] = 1
    b = np.zeros((8, 8), np.uint8)
    b[2:6, 4:8] = 1
    sem = semantic_from_instances(np.stack([a, b]), np.array([0, 0]), (8, 8))
    assert not edges_from_labels(sem, 1)[3, 4]  # one class: no semantic edge between them
    e = edges_from_instances(np.stack([a, b]), (8, 8), thickness=1, semantic=sem)
    assert e[3, 4] == 1  # but an instance edge


def test_edges_from_annotators() -> None:
    a = np.zeros((3, 4), bool)
    a[0, 0] = a[1, 1] = True
    b = np.zeros((3, 4), bool)
    b[0, 0] = b[2, 2] = True
    c = np.zeros((3, 4), bool)
    c[0, 0] = True
    union = edges_from_annotators([a, b, c], "union")
    assert union.sum() == 3 and union[0, 0] == union[1, 1] == union[2, 2] == 1
    mean = edges_from_annotators([a, b, c], "mean", threshold=0.5)
    # Fractions: (0, 0) = 1 -> edge; (1, 1) and (2, 2) = 1/3 -> in between: ignored.
    assert mean[0, 0] == 1 and mean[1, 1] == 255 and mean[2, 2] == 255 and mean[0, 1] == 0
    with pytest.raises(ValueError, match="unknown annotator merge mode"):
        edges_from_annotators([a], "max")


def test_polygons_round_trip() -> None:
    m = np.zeros((20, 30), np.uint8)
    m[3:9, 4:20] = 1
    m[12, 5] = 1  # a single pixel: still a polygon of positive area
    polys = mask_to_polygons(m)
    assert len(polys) == 2
    np.testing.assert_array_equal(polygons_to_mask(polys, 20, 30), m)
    assert mask_to_box(m) == [4.0, 3.0, 20.0, 13.0]
    assert mask_to_box(np.zeros((3, 3))) is None
