"""Showing annotated frames in a window (``tools/infer.py --show``)."""

from __future__ import annotations

import os
import re
import sys

import cv2
import numpy as np

from mtvision.inference.sources import InferenceError


def display_problem() -> str | None:
    """Why a window cannot be shown here, or None when it can.

    pip's opencv-python-headless (which albumentations installs) has no GUI at all, and a GUI
    build still needs a display server on Linux.
    """
    found = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if found is None or found.group(1).upper() == "NONE":
        return ("this OpenCV build has no GUI support (opencv-python-headless); install a GUI "
                "build (opencv-python) in place of it to use --show")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return "no display to show frames on (DISPLAY is not set)"
    return None


class Display:
    """One window showing RGB frames; ``show`` returns False once the user pressed q or Esc."""

    def __init__(self, title: str) -> None:
        problem = display_problem()
        if problem is not None:
            raise InferenceError(f"--show: {problem}")
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyWindow(self.title)
