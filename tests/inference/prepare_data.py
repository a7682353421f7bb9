"""Regenerate the small real media of the inference tests from ``../shared/data``.

    python tests/inference/prepare_data.py

Writes ``tests/data/clip.mp4`` (10 frames, with two cars, of Intel's car-detection.mp4,
192x108, 12.5 fps, mp4v) and ``tests/data/images/*.jpg`` (two COCO val2017 images downscaled
to 160 px), with their attribution files. Only material whose licence allows redistribution
with changes is used (CC BY 4.0 video; CC BY 2.0 and CC BY-SA 2.0 images).
"""

from __future__ import annotations

from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
DATA = ROOT / "tests" / "data"

CLIP_START = 196  # the first frames show an empty parking lot; two cars are in view here
CLIP_FRAMES = 10
CLIP_SIZE = (192, 108)  # (width, height): the source's 16:9 at a quarter of its width
IMAGE_MAX_SIDE = 160
# (file, Flickr licence, licence URL, Flickr URL): CC BY and CC BY-SA only (no NC / ND).
IMAGES = [
    ("000000343934.jpg", "CC BY 2.0", "http://creativecommons.org/licenses/by/2.0/",
     "http://farm6.staticflickr.com/5339/10051858643_11783d3e9f_z.jpg"),
    ("000000128372.jpg", "CC BY-SA 2.0", "http://creativecommons.org/licenses/by-sa/2.0/",
     "http://farm9.staticflickr.com/8479/8172792873_5d083ef147_z.jpg"),
]


def make_clip() -> Path:
    src = SHARED / "videos" / "car-detection.mp4"
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {src}")
    fps = cap.get(cv2.CAP_PROP_FPS)
    out = DATA / "clip.mp4"
    # mp4v: available in every OpenCV wheel (H.264 "avc1" often is not).
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, CLIP_SIZE)
    if not writer.isOpened():
        raise SystemExit("cannot open an mp4v video writer")
    for i in range(CLIP_START + CLIP_FRAMES):
        ok, frame = cap.read()
        if not ok:
            raise SystemExit(f"{src} has fewer than {CLIP_START + CLIP_FRAMES} frames")
        if i < CLIP_START:
            continue
        writer.write(cv2.resize(frame, CLIP_SIZE, interpolation=cv2.INTER_AREA))
    writer.release()
    cap.release()
    (DATA / "LICENSE-clip.txt").write_text(
        f"tests/data/clip.mp4: frames {CLIP_START}-{CLIP_START + CLIP_FRAMES - 1} of "
        "car-detection.mp4, downscaled from 768x432\n"
        "to 192x108 and re-encoded (MPEG-4 part 2, 12.5 fps) by tests/inference/prepare_data.py.\n"
        "\n"
        "Original: \"car-detection.mp4\", Intel Corporation, IoT DevKit sample videos\n"
        "(https://github.com/intel-iot-devkit/sample-videos).\n"
        "Licence: Creative Commons Attribution 4.0 International (CC BY 4.0),\n"
        "https://creativecommons.org/licenses/by/4.0/\n"
        "The excerpt was shortened, downscaled and re-encoded; no other change was made.\n")
    return out


def make_images() -> list[Path]:
    out_dir = DATA / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "tests/data/images/: COCO val2017 images downscaled to a longest side of 160 px",
        "(JPEG quality 90) by tests/inference/prepare_data.py.",
        "",
        "COCO 2017 (https://cocodataset.org), COCO Consortium; annotations CC BY 4.0.",
        "Each image keeps the Flickr licence its author gave it (from COCO's annotations JSON):",
        "",
    ]
    written = []
    for name, licence, licence_url, flickr in IMAGES:
        img = cv2.imread(str(SHARED / "coco-json-val2017-subset" / "samples" / "images" / name))
        h, w = img.shape[:2]
        scale = IMAGE_MAX_SIDE / max(h, w)
        small = cv2.resize(img, (round(w * scale), round(h * scale)),
                           interpolation=cv2.INTER_AREA)
        path = out_dir / name
        cv2.imwrite(str(path), small, [cv2.IMWRITE_JPEG_QUALITY, 90])
        written.append(path)
        lines.append(f"- {name}: {flickr} ({licence}, {licence_url}); downscaled from "
                     f"{w}x{h} to {small.shape[1]}x{small.shape[0]}.")
    (out_dir / "LICENSE.txt").write_text("\n".join(lines) + "\n")
    return written


if __name__ == "__main__":
    DATA.mkdir(parents=True, exist_ok=True)
    for p in [make_clip(), *make_images()]:
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size} bytes")
