"""Image classification: a folder per class (``image_folder``) or a CSV of images and labels
(``image_csv``, single- or multi-label)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtvision.data.base import ReaderDataset, TransformFn
from mtvision.data.io import IMAGE_SUFFIXES, DataError, is_image_file, read_image
from mtvision.data.sample import RawSample
from mtvision.registry import DATASETS


def _check_classes(classes: Sequence[str], where: str) -> list[str]:
    """The ``classes`` option as a list of distinct non-empty names."""
    if isinstance(classes, str):
        raise DataError(f"{where}: option 'classes' must be a list of names, got a string")
    names = [str(c) for c in classes]
    if not names or any(not n for n in names):
        raise DataError(f"{where}: option 'classes' must list non-empty class names")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{where}: option 'classes' names {dup} more than once")
    return names


@DATASETS.register("image_folder")
class ImageFolderDataset(ReaderDataset):
    """Single-label classification with one sub-folder per class::

        ROOT/SPLIT/CLASS_NAME/**/*.jpg     images (.jpg .jpeg .png .bmp .tif .tiff .webp, any
                                           case; sub-folders searched; hidden files skipped)

    Classes are the sorted sub-folder names, or the option ``classes`` (fixes the list and
    label order, e.g. to match another split; a folder not in it is an error, a class without
    a folder just has no images). ``file_name`` is the path below ``ROOT/SPLIT``.
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, classes: list[str] | None = None,
                 **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
        self.split_dir = self.root / split
        if not self.split_dir.is_dir():
            raise DataError(f"image_folder split '{split}': folder '{self.split_dir}' not found")
        folders = sorted(d.name for d in self.split_dir.iterdir()
                         if d.is_dir() and not d.name.startswith("."))
        if classes is None:
            names = folders
            if not names:
                raise DataError(f"image_folder '{self.split_dir}': no class sub-folders")
        else:
            names = _check_classes(classes, f"image_folder '{self.split_dir}'")
            extra = [f for f in folders if f not in names]
            if extra:
                raise DataError(f"image_folder: folder '{self.split_dir / extra[0]}' is not "
                                f"among the classes {names}")
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(names):
            d = self.split_dir / name
            if not d.is_dir():
                continue
            files = sorted(p for p in d.rglob("*") if is_image_file(p)
                           and p.is_file() and not p.name.startswith("."))
            self.samples.extend((p, label) for p in files)
        if not self.samples:
            raise DataError(f"image_folder '{self.split_dir}': no images in the class folders "
                            f"(extensions {', '.join(IMAGE_SUFFIXES)})")
        self._setup(["cls"], cls_classes=names)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def source(self) -> str:
        return f"image_folder '{self.split_dir}'"

    def read(self, index: int) -> RawSample:
        path, label = self.samples[index]
        return RawSample(image=read_image(path), image_id=index,
                         file_name=path.relative_to(self.split_dir).as_posix(), cls=label)


@DATASETS.register("image_csv")
class ImageCSVDataset(ReaderDataset):
    """Classification from a CSV file with a header row::

        ROOT/SPLIT.csv                     (option ``csv_file``: another name below ROOT)
          image,labels                     extra columns are ignored
          cat/001.jpg,cat                  one class name per image ...
          street/07.png,car;person         ... or several, separated by ``label_sep`` (";")
        ROOT/IMAGE                         the image paths are relative to ROOT, or to
                                           ``ROOT/images_dir`` with that option

    Multi-label when the option ``multi_label`` is true or any row names several classes (the
    target is then a 0/1 vector). Classes are the option ``classes`` (fixed list and order) or
    the sorted names found in the file. Every image must exist; an empty label or a name not
    in ``classes`` is an error naming the CSV line.
    """

    def __init__(self, root: str | Path, split: str, transforms: TransformFn | None = None,
                 skip_invalid: bool = False, csv_file: str | None = None,
                 images_dir: str | None = None, label_sep: str = ";",
                 multi_label: bool = False, classes: list[str] | None = None,
                 **common: Any) -> None:
        super().__init__(root, split, transforms, skip_invalid, **common)
        self.csv_path = self.root / (csv_file if csv_file is not None else f"{split}.csv")
        if not label_sep:
            raise DataError(f"image_csv '{self.csv_path}': option 'label_sep' must not be empty")
        self.image_root = self.root / images_dir if images_dir is not None else self.root
        rows = self._parse(label_sep)
        if classes is not None:
            names = _check_classes(classes, f"image_csv '{self.csv_path}'")
        else:
            names = sorted({n for _, _, labels in rows for n in labels})
        index = {n: i for i, n in enumerate(names)}
        multi = bool(multi_label) or any(len(labels) > 1 for _, _, labels in rows)
        # (image path, path as written in the CSV, CSV line, class ids)
        self.samples: list[tuple[Path, str, int, list[int]]] = []
        for line, rel, labels in rows:
            unknown = [n for n in labels if n not in index]
            if unknown:
                raise DataError(f"image_csv '{self.csv_path}' line {line}: unknown class "
                                f"'{unknown[0]}' (classes: {names})")
            path = self.image_root / rel
            if not path.is_file():
                raise DataError(f"image_csv '{self.csv_path}' line {line}: image '{path}' "
                                "not found")
            self.samples.append((path, rel, line, sorted({index[n] for n in labels})))
        self._setup(["cls"], cls_classes=names, multi_label=multi)

    def _parse(self, sep: str) -> list[tuple[int, str, list[str]]]:
        """(line number, image path, class names) of each data row."""
        try:
            # utf-8-sig: spreadsheet programs often start CSV files with a byte-order mark.
            with open(self.csv_path, encoding="utf-8-sig", newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None:
                    raise DataError(f"image_csv '{self.csv_path}': empty file (expected a "
                                    "header row with columns 'image' and 'labels')")
                cols = [c.strip() for c in header]
                missing = [c for c in ("image", "labels") if c not in cols]
                if missing:
                    raise DataError(f"image_csv '{self.csv_path}': header has no column "
                                    f"{missing[0]!r} (columns: {cols})")
                i_img, i_lab = cols.index("image"), cols.index("labels")
                rows = []
                for row in reader:
                    line = reader.line_num
                    if not any(c.strip() for c in row):
                        continue  # blank line
                    if len(row) <= max(i_img, i_lab):
                        raise DataError(f"image_csv '{self.csv_path}' line {line}: "
                                        f"{len(row)} columns, the header has {len(cols)}")
                    rel = row[i_img].strip()
                    if not rel:
                        raise DataError(f"image_csv '{self.csv_path}' line {line}: empty "
                                        "image path")
                    # Empty pieces ("a;" or "a;;b") are separator slips, not class names.
                    labels = [n.strip() for n in row[i_lab].split(sep) if n.strip()]
                    if not labels:
                        raise DataError(f"image_csv '{self.csv_path}' line {line}: empty label")
                    rows.append((line, rel, labels))
        except FileNotFoundError:
            raise DataError(f"image_csv: CSV file '{self.csv_path}' not found") from None
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"image_csv: cannot read CSV file '{self.csv_path}': {e}") from None
        if not rows:
            raise DataError(f"image_csv '{self.csv_path}': no data rows")
        return rows

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def source(self) -> str:
        return f"image_csv '{self.csv_path}'"

    def read(self, index: int) -> RawSample:
        path, rel, line, labels = self.samples[index]
        try:
            image = read_image(path)
        except DataError as e:
            raise DataError(f"image_csv '{self.csv_path}' line {line}: {e}") from None
        return RawSample(image=image, image_id=index, file_name=rel,
                         cls=labels if self.multi_label else labels[0])
