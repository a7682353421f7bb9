"""Dataset readers, one module per format; importing this package registers them all."""

import mtvision.data.formats.bsds  # noqa: F401
import mtvision.data.formats.camvid  # noqa: F401
import mtvision.data.formats.cityscapes  # noqa: F401
import mtvision.data.formats.classification  # noqa: F401
import mtvision.data.formats.coco  # noqa: F401
import mtvision.data.formats.mtv  # noqa: F401
import mtvision.data.formats.nyud_mt  # noqa: F401
import mtvision.data.formats.nyuv2  # noqa: F401
import mtvision.data.formats.pascal_mt  # noqa: F401
import mtvision.data.formats.voc  # noqa: F401
import mtvision.data.formats.yolo  # noqa: F401
