"""mtvision: multi-task computer vision on one shared backbone.

    from mtvision import Predictor
    result = Predictor("runs/exp/best.pt").predict("street.jpg")
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["Predictor", "Result", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import mtvision` (e.g. by the data tools) should not pull in torch and the models.
    if name in ("Predictor", "Result"):
        from mtvision.inference import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'mtvision' has no attribute {name!r}")
