"""Convert datasets between formats, or check one.

    mtvision convert coco2yolo ANN.json IMG_DIR DST [--split S] [--no-segments]
                               [--symlink-images]
    mtvision convert yolo2coco DATA.yaml DST.json [--split S]
    mtvision convert voc2coco VOC_ROOT DST.json [--split S] [--image-set NAME]
    mtvision convert cityscapes2coco CITYSCAPES_ROOT DST_DIR [--split S]
    mtvision convert bsds2png BSDS_ROOT DST [--split S]
    mtvision convert masks2edges SRC_DIR DST_DIR [--thickness N] [--ignore I]
    mtvision convert validate ROOT --format F [--split S] [--option k=v]
                                    [--json REPORT.json]

``validate`` exits with 1 when it found problems. `python tools/convert_dataset.py` is the same
command.
"""

from __future__ import annotations

import argparse
import json

from mtvision.cli import run_cli


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    import yaml

    return key, yaml.safe_load(value)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-progress", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("coco2yolo", help="COCO JSON -> YOLO txt + data.yaml")
    s.add_argument("ann_file")
    s.add_argument("img_dir")
    s.add_argument("dst")
    s.add_argument("--split", default="train")
    s.add_argument("--no-segments", action="store_true", help="boxes only, no polygons")
    s.add_argument("--symlink-images", action="store_true",
                   help="link the images instead of copying them")

    s = sub.add_parser("yolo2coco", help="YOLO data.yaml split -> COCO JSON")
    s.add_argument("data_yaml")
    s.add_argument("dst_json")
    s.add_argument("--split", default="train")

    s = sub.add_parser("voc2coco", help="Pascal VOC -> COCO JSON")
    s.add_argument("voc_root")
    s.add_argument("dst_json")
    s.add_argument("--split", default="train")
    s.add_argument("--image-set", default=None, help="ImageSets list: Main or Segmentation")

    s = sub.add_parser("cityscapes2coco", help="Cityscapes gtFine -> COCO JSON + train-id PNGs")
    s.add_argument("root")
    s.add_argument("dst_dir")
    s.add_argument("--split", default="train")

    s = sub.add_parser("bsds2png", help="BSDS500 .mat -> union and mean edge PNGs")
    s.add_argument("bsds_root")
    s.add_argument("dst")
    s.add_argument("--split", default="test")

    s = sub.add_parser("masks2edges", help="label-map PNGs -> edge PNGs")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("--thickness", type=int, default=2)
    s.add_argument("--ignore", type=int, default=255, help="ignore label (-1: none)")

    s = sub.add_parser("validate", help="read a whole dataset, report problems and statistics")
    s.add_argument("root")
    s.add_argument("--format", required=True, help="a dataset type, e.g. coco, yolo, voc")
    s.add_argument("--split", default="train")
    s.add_argument("--option", action="append", default=[], type=_option, metavar="KEY=VALUE",
                   help="a reader option (YAML value), e.g. --option data_yaml=data.yaml")
    s.add_argument("--json", default=None, help="also write the report as JSON")
    return p


def convert(a: argparse.Namespace) -> int:
    """Run the parsed command; returns the exit status."""
    progress = not a.no_progress
    if a.command == "validate":
        from mtvision.data.convert.validate import format_report, validate_dataset
        from mtvision.data.io import write_json_atomic

        report = validate_dataset(a.root, a.format, a.split, dict(a.option), progress)
        print(format_report(report))
        if a.json:
            write_json_atomic(report, a.json, indent=2)
        return 1 if report["problems_total"] else 0
    if a.command == "coco2yolo":
        from mtvision.data.convert.coco_yolo import coco_to_yolo

        summary = coco_to_yolo(a.ann_file, a.img_dir, a.dst, split=a.split,
                               segments=not a.no_segments, symlink_images=a.symlink_images,
                               progress=progress)
    elif a.command == "yolo2coco":
        from mtvision.data.convert.coco_yolo import yolo_to_coco

        summary = yolo_to_coco(a.data_yaml, a.dst_json, split=a.split, progress=progress)
    elif a.command == "voc2coco":
        from mtvision.data.convert.voc import voc_to_coco

        summary = voc_to_coco(a.voc_root, a.dst_json, image_set=a.image_set, split=a.split,
                              progress=progress)
    elif a.command == "cityscapes2coco":
        from mtvision.data.convert.cityscapes import cityscapes_to_coco

        summary = cityscapes_to_coco(a.root, a.dst_dir, split=a.split, progress=progress)
    elif a.command == "bsds2png":
        from mtvision.data.convert.bsds import bsds_to_png

        summary = bsds_to_png(a.bsds_root, a.dst, split=a.split, progress=progress)
    else:
        from mtvision.data.convert.edges import masks_to_edges

        summary = masks_to_edges(a.src, a.dst, thickness=a.thickness,
                                 ignore_index=None if a.ignore < 0 else a.ignore,
                                 progress=progress)
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    a = build_parser(prog).parse_args(argv)
    status = [0]

    def run() -> None:
        status[0] = convert(a)

    code = run_cli(run)
    return code or status[0]

