"""Parameter-sharing architectures, registered in ``mtvision.registry.SHARING`` and chosen by
``model.sharing.name``: ``hard`` (default), ``soft``, ``cross_stitch``, ``mtan``."""

from mtvision.models.sharing.base import PerTaskSharing, Sharing, SharingParts, task_key
from mtvision.models.sharing.cross_stitch import CrossStitch, CrossStitchUnit
from mtvision.models.sharing.hard import HardSharing
from mtvision.models.sharing.mtan import MTAN, AttentionMask
from mtvision.models.sharing.soft import SoftSharing

__all__ = ["MTAN", "AttentionMask", "CrossStitch", "CrossStitchUnit", "HardSharing",
           "PerTaskSharing", "Sharing", "SharingParts", "SoftSharing", "task_key"]
