"""What a reader produces for one image, before augmentation: numpy arrays in image pixels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Tasks the data layer knows, in the order batches list them.
# ``parts`` (human-part segmentation) and ``sal`` (binary saliency) are the dense multi-task
# benchmarks' tasks (PASCAL-Context, ``formats/pascal_mt.py``).
TASKS = ("det", "seg", "edge", "cls", "depth", "normals", "parts", "sal")


@dataclass
class RawSample:
    """One image and the labels its dataset has for it; ``None`` means "not labelled".

    ``boxes`` float32[K, 4] xyxy pixels with ``labels`` int64[K] (contiguous class ids);
    ``crowd_boxes`` / ``crowd_labels`` are COCO ``iscrowd`` regions, kept for evaluation only;
    ``instance_masks`` uint8[K, H, W] (0/1) align with ``boxes``, ``crowd_masks`` with the crowds.
    ``seg`` uint8[H, W] class ids (255 = ignore); ``edge`` uint8[H, W] (1 edge, 0 not,
    255 ignore); ``edge_annotators`` the separate annotators' bool boundary maps (BSDS500), kept
    at full resolution for the benchmark protocol; ``depth`` float32[H, W] (0 = invalid);
    ``normals`` float32[H, W, 3] (zero vector = invalid); ``cls`` an int or a list of ints;
    ``parts`` uint8[H, W] human-part class ids (255 = ignore); ``sal`` uint8[H, W] saliency
    (1 salient, 0 not, 255 ignore).
    """

    image: np.ndarray
    image_id: int
    file_name: str
    boxes: np.ndarray | None = None
    labels: np.ndarray | None = None
    crowd_boxes: np.ndarray | None = None
    crowd_labels: np.ndarray | None = None
    instance_masks: np.ndarray | None = None
    crowd_masks: np.ndarray | None = None
    seg: np.ndarray | None = None
    edge: np.ndarray | None = None
    edge_annotators: list[np.ndarray] | None = None
    depth: np.ndarray | None = None
    normals: np.ndarray | None = None
    cls: int | list[int] | None = None
    parts: np.ndarray | None = None
    sal: np.ndarray | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def labelled_tasks(self) -> list[str]:
        """The tasks this sample has labels for."""
        have = {"det": self.boxes is not None, "seg": self.seg is not None,
                "edge": self.edge is not None, "cls": self.cls is not None,
                "depth": self.depth is not None, "normals": self.normals is not None,
                "parts": self.parts is not None, "sal": self.sal is not None}
        return [t for t in TASKS if have[t]]
