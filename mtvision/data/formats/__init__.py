"""Dataset readers, one module per format; importing this package registers them all."""

from mtvision.data.formats import mtvision  # noqa: F401
