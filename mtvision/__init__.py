"""mtvision: multi-task computer vision on one shared backbone."""

__version__ = "0.1.0"
