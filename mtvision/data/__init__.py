"""Datasets, transforms and collation: files on disk -> samples -> batches.

* ``formats/``: one reader per dataset format (COCO, YOLO, VOC, Cityscapes, BSDS500, NYUv2,
  CamVid, image folders / CSVs, and ``mtv``: the demo data's own layout), registered by name
  for ``data.type``; ``base.ReaderDataset`` is what they share (task selection, derived labels,
  checks, skipping bad samples), ``sample.RawSample`` what they read.
* ``derive``: labels from labels (semantic maps from instances, edges from boundaries);
  ``polygons``: COCO polygon / RLE encodings.
* ``transforms``: the albumentations pipeline that moves every target with the image;
  ``collate``: batches with a presence flag per task; ``mixing``: several datasets with ratios;
  ``build``: all of it from the ``data`` config section.
* ``convert/``: the converters and ``validate`` behind ``tools/convert_dataset.py``.

A sample (``dataset[i]``) is a dict::

    {"image": uint8[3, H, W] (normalize_images on the device), "image_id": int, "file_name": str,
     "orig_size": (h, w), "targets": {task: target}}  # only the tasks labelled for it

with targets as documented in ``mtvision.models.heads.base``; ``collate`` stacks samples into
a batch ``{"images", "image_ids", "file_names", "orig_sizes", "targets", "present",
"edge_gts"}``.
"""
