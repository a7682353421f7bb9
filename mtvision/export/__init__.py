"""Export to ONNX and TorchScript, checked against PyTorch on a real image.

``ExportModule`` is the exported graph (normalised images in, one tensor per task out; see
``mtvision.export.wrapper`` for the outputs); ``export_checkpoint`` (behind
``tools/export.py``) loads a checkpoint, exports, verifies and writes the JSON report.
"""

from mtvision.export.onnx import DEFAULT_OPSET, EXPORTERS, export_onnx
from mtvision.export.runner import DEFAULT_IMAGE, FORMATS, export_checkpoint, format_report
from mtvision.export.torchscript import METHODS, export_torchscript
from mtvision.export.verify import VerificationError, compare, format_table
from mtvision.export.wrapper import ExportError, ExportModule, output_shapes

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_OPSET",
    "EXPORTERS",
    "FORMATS",
    "METHODS",
    "ExportError",
    "ExportModule",
    "VerificationError",
    "compare",
    "export_checkpoint",
    "export_onnx",
    "export_torchscript",
    "format_report",
    "format_table",
    "output_shapes",
]
