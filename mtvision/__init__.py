"""mtvision: multi-task computer vision on one shared backbone.

    from mtvision import Predictor
    result = Predictor("runs/exp/best.pt").predict("street.jpg")
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import Any

__version__ = "0.1.0"


class _CheckoutKernels(importlib.abc.MetaPathFinder):
    """``mtvision.kernels`` in a source checkout: the Triton kernels live in the repository's
    top-level ``kernels/`` folder, which the wheel installs as ``mtvision/kernels`` (no
    top-level ``kernels`` module to clash with other packages). A checkout always imports its
    own folder, whatever else is installed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "mtvision.kernels":
            return None
        return importlib.util.spec_from_file_location(
            fullname, self.folder / "__init__.py", submodule_search_locations=[str(self.folder)])


_here = Path(__file__).resolve().parent
if not (_here / "kernels").is_dir() and (_here.parent / "kernels" / "__init__.py").is_file():
    sys.meta_path.insert(0, _CheckoutKernels(_here.parent / "kernels"))

__all__ = ["Predictor", "Result", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import mtvision` (e.g. by the data tools) should not pull in torch and the models.
    if name in ("Predictor", "Result"):
        from mtvision.inference import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'mtvision' has no attribute {name!r}")
