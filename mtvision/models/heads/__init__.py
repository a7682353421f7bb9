"""Task heads; importing this package registers them in ``mtvision.registry.HEADS``.

``fcos`` (det), ``fpn_seg`` (seg), ``hed`` (edge), ``linear`` (cls), ``fpn_depth`` (depth),
``fpn_normals`` (normals), ``fpn_parts`` (parts: human parts), ``fpn_sal`` (sal: saliency).
"""

from mtvision.models.heads.base import DenseLoss, FeatureInfo, TaskHead
from mtvision.models.heads.classification import LinearClsHead
from mtvision.models.heads.decoder import FPNDecoder
from mtvision.models.heads.depth import FPNDepthHead
from mtvision.models.heads.detection import FCOSHead
from mtvision.models.heads.edge import HEDEdgeHead
from mtvision.models.heads.normals import FPNNormalsHead
from mtvision.models.heads.saliency import FPNSaliencyHead
from mtvision.models.heads.segmentation import FPNPartsHead, FPNSegHead

__all__ = [
    "DenseLoss",
    "FCOSHead",
    "FPNDecoder",
    "FPNDepthHead",
    "FPNNormalsHead",
    "FPNPartsHead",
    "FPNSaliencyHead",
    "FPNSegHead",
    "FeatureInfo",
    "HEDEdgeHead",
    "LinearClsHead",
    "TaskHead",
]
