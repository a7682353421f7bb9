"""PASCAL-Context for dense multi-task learning ("PASCAL_MT"), in the layout of ASTMT (Maninis
et al., CVPR 2019), the Multi-Task-Learning-PyTorch code base (MTI-Net, Vandenhende et al.,
ECCV 2020) and ATRC / InvPT's ``PASCALContext`` archive: 4,998 train / 5,105 val images with
semantic segmentation (21 VOC classes), human parts (6 parts + background, on images with
people), distilled saliency, distilled surface normals and edges from the context labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from mtvision.data.base import ReaderDataset, TransformFn
from mtvision.data.formats.voc import VOC_SEG_CLASSES, voc_image_ids
from mtvision.data.io import DataError, read_image, read_label_map
from mtvision.data.sample import RawSample
from mtvision.registry import DATASETS

PARTS_CLASSES = ("background", "head", "torso", "uarm", "larm", "uleg", "lleg")
# PASCAL-Part's person part names -> the 6-part grouping of the multi-task benchmarks (left and
# right merged; hands with the lower arms, feet with the lower legs).
PERSON_PART_GROUP = {
    **dict.fromkeys(("hair", "head", "lear", "rear", "lebrow", "rebrow", "leye", "reye",
                     "mouth", "nose"), 1),
    **dict.fromkeys(("neck", "torso"), 2),
    **dict.fromkeys(("luarm", "ruarm"), 3),
    **dict.fromkeys(("lhand", "rhand", "llarm", "rlarm"), 4),
    **dict.fromkeys(("luleg", "ruleg"), 5),
    **dict.fromkeys(("lfoot", "rfoot", "llleg", "rlleg"), 6),
}
PERSON_CLASS = 15  # PASCAL-Part's class_ind of "person" (the VOC class order, from 1)

# The distilled normals are kept only on pixels whose PASCAL-Context label (the 459-class
# LabelMap) is also an NYUv2 object class, the domain the distilling network was trained on,
# plus tvmonitor: the ids of those labels in PASCAL-Context's labels.txt.
NORMALS_VALID_LABELS = frozenset((
    3, 4, 6, 9, 10, 11, 13, 15, 17, 18, 22, 23, 29, 30, 33, 34, 36, 37, 38, 39, 41, 43, 46, 49,
    50, 51, 53, 55, 56, 59, 61, 62, 65, 66, 68, 69, 72, 73, 78, 83, 84, 85, 87, 88, 95, 96, 101,
    104, 105, 107, 111, 113, 115, 122, 124, 135, 141, 142, 143, 146, 150, 154, 157, 158, 159,
    165, 172, 174, 181, 183, 184, 191, 193, 195, 197, 199, 202, 213, 215, 216, 219, 220, 223,
    225, 228, 230, 232, 233, 238, 239, 242, 243, 246, 250, 251, 252, 255, 260, 261, 263, 269,
    272, 273, 275, 281, 283, 284, 285, 286, 287, 288, 290, 291, 292, 293, 295, 304, 307, 309,
    310, 314, 315, 319, 323, 329, 330, 331, 336, 342, 345, 349, 350, 351, 352, 355, 357, 368,
    370, 371, 374, 379, 380, 383, 384, 397, 401, 403, 405, 407, 408, 411, 412, 413, 414, 417,
    419, 421, 423, 427, 429, 430, 432, 440, 441, 442, 443, 444, 446, 454, 457,
))

# Task -> its folder under ROOT. Edges and the normals' mask both come from the context labels.
CONTEXT_DIR = Path("pascal-context") / "trainval"
TASK_DIRS = {"seg": Path("semseg"), "parts": Path("human_parts"), "edge": CONTEXT_DIR,
             "normals": Path("normals_distill"), "sal": Path("sal_distill")}
SEG_SUBDIRS = ("VOC12", "pascal-context")


def load_mat(path: Path, what: str) -> dict[str, Any]:
    """A .mat file's variables; one ``DataError`` naming the file when it cannot be read."""
    try:
        return scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise DataError(f"cannot read {what} '{path}': file not found") from None
    except Exception as e:
        # loadmat raises many types on bad bytes (MatReadError, ValueError, zlib errors...).
        raise DataError(f"cannot read {what} '{path}': not a readable .mat file "
                        f"({type(e).__name__}: {e})") from None


def context_label_map(path: Path, hw: tuple[int, int]) -> np.ndarray:
    """The 459-class PASCAL-Context ``LabelMap`` of a ``pascal-context/trainval`` .mat file."""
    mat = load_mat(path, "context labels")
    labels = mat.get("LabelMap")
    if not isinstance(labels, np.ndarray) or labels.ndim != 2 \
            or not np.issubdtype(labels.dtype, np.number):
        raise DataError(f"context labels '{path}' have no 2-D numeric 'LabelMap' (variables: "
                        f"{sorted(k for k in mat if not k.startswith('__'))})")
    if labels.shape != tuple(hw):
        raise DataError(f"context labels '{path}' are {labels.shape[1]}x{labels.shape[0]}, the "
                        f"image is {hw[1]}x{hw[0]}")
    return labels.astype(np.int64)


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """bool[H, W]: the benchmark's edges of a label map, the pixels where the 4-neighbour
    Laplacian (borders mirrored without repeating the edge pixel) is non-zero, thinned to
    one-pixel lines (``bwmorph(..., 'thin', inf)``)."""
    from mtvision.metrics.edge import thin_stack

    a = np.pad(labels.astype(np.float64), 1, mode="reflect")
    lap = a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] - 4.0 * a[1:-1, 1:-1]
    return thin_stack((lap != 0)[None])[0]


def _struct_field(entry: Any, field: str, path: Path, where: str) -> Any:
    names = getattr(getattr(entry, "dtype", None), "names", None) or ()
    if field not in names:
        raise DataError(f"human parts '{path}': {where} has no field '{field}' (fields: "
                        f"{list(names)})")
    return entry[field]


def human_parts_map(path: Path, hw: tuple[int, int]) -> np.ndarray | None:
    """uint8[H, W] part classes (PARTS_CLASSES) of a PASCAL-Part ``anno`` .mat file, or None
    when no person in it has part annotations (the image then has no parts label).

    Every person (``class_ind`` 15) with parts paints its parts' masks with their group
    (PERSON_PART_GROUP); all other pixels are background (0), as the benchmark's targets are.
    """
    mat = load_mat(path, "human parts")
    anno = mat.get("anno")
    if not isinstance(anno, np.ndarray) or anno.size != 1:
        raise DataError(f"human parts '{path}' has no 'anno' struct (variables: "
                        f"{sorted(k for k in mat if not k.startswith('__'))})")
    objects = np.asarray(_struct_field(anno.ravel()[0], "objects", path, "'anno'")).ravel()
    target = None
    for k, obj in enumerate(objects):
        where = f"object {k + 1}"
        cls = np.asarray(_struct_field(obj, "class_ind", path, where)).ravel()
        parts = np.asarray(_struct_field(obj, "parts", path, where)).ravel()
        if cls.size != 1 or int(cls[0]) != PERSON_CLASS or parts.size == 0:
            continue
        if target is None:
            target = np.zeros(hw, np.uint8)
        for j, part in enumerate(parts):
            name = str(np.asarray(_struct_field(part, "part_name", path, where)).ravel()[0])
            if name not in PERSON_PART_GROUP:
                raise DataError(f"human parts '{path}': {where} part {j + 1} is {name!r}, not a "
                                "PASCAL-Part person part")
            mask = np.asarray(_struct_field(part, "mask", path, f"{where} part '{name}'"))
            if mask.shape != tuple(hw):
                raise DataError(f"human parts '{path}': {where} part '{name}' mask is "
                                f"{mask.shape[1]}x{mask.shape[0]}, the image is {hw[1]}x{hw[0]}")
            target[mask != 0] = PERSON_PART_GROUP[name]
    return target


def read_split_list(path: Path, what: str) -> list[str]:
    """Image names of a split list (one per line, blank lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{what} split list '{path}' not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {what} split list '{path}': {e}") from None
    names = []
    for i, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1:
            raise DataError(f"{what} split list '{path}' line {i}: expected one image name, "
                            f"got {line.strip()!r}")
        names.append(fields[0])
    if not names:
        raise DataError(f"{what} split list '{path}' lists no image")
    return names


@DATASETS.register("pascal_mt")
class PascalMTDataset(ReaderDataset):
    """PASCAL-Context multi-task, one sample per image of ``ImageSets/Context/SPLIT.txt``::

        ROOT/                                   (PASCAL_MT/ or PASCALContext/)
          JPEGImages/NAME.jpg                   RGB images
          ImageSets/Context/{train,val}.txt     the splits, one name per line
          semseg/VOC12/NAME.png                 seg: 8-bit class ids 0..20 (VOC_SEG_CLASSES),
          semseg/pascal-context/NAME.png          255 = ignore (either folder; VOC12 first)
          human_parts/NAME.mat                  parts: PASCAL-Part ``anno`` struct (objects with
                                                class_ind, mask and parts: part_name, mask)
          pascal-context/trainval/NAME.mat      edge: ``LabelMap`` (459 context labels)
          normals_distill/NAME.png              normals: RGB, n = 2 v / 255 - 1
          sal_distill/NAME.png                  sal: 8-bit, salient where v / 255 > 0.5

    A task is labelled when its folder exists (``normals`` also needs the context labels), and
    then every image of the split needs its file there. ``parts`` is labelled per image: only
    images with a person that has part annotations carry it (the others are absent from the
    parts loss and metric, as the benchmark scores human parts on images with people only);
    its classes are PARTS_CLASSES. ``edge`` is the thinned boundary of the context labels
    (``label_boundaries``), also kept at full resolution as the one annotator of the BSDS
    protocol (evaluated with ``eval.edge_max_dist: 0.0075``). Normals are zeroed (invalid)
    outside NORMALS_VALID_LABELS. ``image_id`` is the name's digits (``voc_image_ids``).
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
        self.image_dir = self.root / "JPEGImages"
        if not self.image_dir.is_dir():
            raise DataError(f"PASCAL-Context MT '{self.root}': folder '{self.image_dir}' not "
                            "found")
        self.list_file = self.root / "ImageSets" / "Context" / f"{split}.txt"
        self.names = read_split_list(self.list_file, "PASCAL-Context")
        for name in self.names:
            if not (self.image_dir / f"{name}.jpg").is_file():
                raise DataError(f"PASCAL-Context image '{self.image_dir / name}.jpg' not found "
                                f"(listed in '{self.list_file}')")
        self.files: dict[str, list[Path]] = {}
        native = []
        for task in TASK_DIRS:
            paths = self._task_files(task)
            if paths is not None:
                self.files[task] = paths
                native.append(task)
        if "normals" in native and "edge" not in native:
            raise DataError(f"PASCAL-Context '{self.root}': the distilled normals need the context "
                            f"labels '{self.root / CONTEXT_DIR}' (their validity mask)")
        self.image_ids = voc_image_ids(self.names)
        self._setup(native, seg_classes=VOC_SEG_CLASSES, parts_classes=PARTS_CLASSES)

    def _task_files(self, task: str) -> list[Path] | None:
        """Each image's label file of ``task``, or None when the task's folder is absent."""
        if task == "seg":
            dirs = [self.root / TASK_DIRS["seg"] / s for s in SEG_SUBDIRS]
            dirs = [d for d in dirs if d.is_dir()]
            if not dirs:
                return None
            out = []
            for name in self.names:
                found = [d / f"{name}.png" for d in dirs if (d / f"{name}.png").is_file()]
                if not found:
                    raise DataError(f"PASCAL-Context image '{name}' has no segmentation "
                                    f"'{dirs[0] / name}.png'")
                out.append(found[0])
            return out
        folder = self.root / TASK_DIRS[task]
        if not folder.is_dir():
            return None
        ext = ".png" if task in ("normals", "sal") else ".mat"
        out = [folder / f"{name}{ext}" for name in self.names]
        missing = [p for p in out if not p.is_file()]
        if missing:
            raise DataError(f"PASCAL-Context '{missing[0]}' not found ({len(missing)} of "
                            f"{len(out)} images of split '{self.split}' lack a {task} file)")
        return out

    def __len__(self) -> int:
        return len(self.names)

    @property
    def source(self) -> str:
        return f"PASCAL-Context MT '{self.root}' split '{self.split}'"

    def read(self, index: int) -> RawSample:
        name = self.names[index]
        img_path = self.image_dir / f"{name}.jpg"
        image = read_image(img_path)
        hw = image.shape[:2]
        raw = RawSample(image=image, image_id=self.image_ids[index], file_name=img_path.name)
        if self.wants("seg") or (self.derive_edges == "seg" and "edge" in self.tasks):
            path = self.files["seg"][index]
            raw.seg = self._same_size(read_label_map(path, "segmentation"), path, hw)
        if self.wants("parts"):
            raw.parts = human_parts_map(self.files["parts"][index], hw)
        own_edges = self.wants("edge") and self.derive_edges is None
        labels = None
        if own_edges or self.wants("normals"):
            labels = context_label_map(self.files["edge"][index], hw)
        if own_edges:
            edge = label_boundaries(labels)
            raw.edge = edge.astype(np.uint8)
            raw.edge_annotators = [edge]
        if self.wants("normals"):
            raw.normals = self._normals(self.files["normals"][index], hw, labels)
        if self.wants("sal"):
            path = self.files["sal"][index]
            sal = self._same_size(read_label_map(path, "saliency"), path, hw)
            raw.sal = (sal.astype(np.float64) / np.iinfo(sal.dtype).max > 0.5).astype(np.uint8)
        return raw

    @staticmethod
    def _same_size(a: np.ndarray, path: Path, hw: tuple[int, int]) -> np.ndarray:
        if a.shape[:2] != tuple(hw):
            raise DataError(f"'{path}' is {a.shape[1]}x{a.shape[0]}, its image is "
                            f"{hw[1]}x{hw[0]}")
        return a

    def _normals(self, path: Path, hw: tuple[int, int], labels: np.ndarray) -> np.ndarray:
        rgb = self._same_size(read_image(path), path, hw)
        n = 2.0 * rgb.astype(np.float32) / 255.0 - 1.0
        valid = np.isin(labels, list(NORMALS_VALID_LABELS))
        return np.where(valid[..., None], n, 0.0).astype(np.float32)
