"""Datasets, transforms and collation.

The project's standard layout ("mtvision" format), which the built-in demo data uses::

    ROOT/
      images/SPLIT/NAME.jpg            RGB images
      semseg/SPLIT/NAME.png            uint8 class ids (0 = background), 255 = ignore
      edges/SPLIT/NAME.png             uint8, >= 128 marks a boundary pixel
      annotations/SPLIT.json           COCO instances JSON (boxes, polygon/RLE masks, categories)

Besides the standard COCO keys the JSON carries a top-level ``"mtvision"`` object::

    {"tasks": ["det", "seg", "edge", "cls"], "seg_classes": [...], "cls_classes": [...],
     "multi_label": false}

and each ``images`` entry may carry ``"seg_file"``, ``"edge_file"`` (paths relative to ROOT) and
``"cls"`` (an int, or a list of ints when multi-label). A task is labelled for an image when its
key is there (``det`` when "det" is in ``tasks``: an image without annotations then has no
objects), so partially labelled data needs no special format.

A sample (``dataset[i]``) is a dict::

    {"image": float[3, H, W] (normalised), "image_id": int, "file_name": str,
     "orig_size": (h, w), "targets": {task: target}}  # only the tasks labelled for it

with targets as documented in ``mtvision.models.heads.base``; ``collate`` stacks samples into
a batch ``{"images", "image_ids", "file_names", "orig_sizes", "targets", "present"}``.
"""
