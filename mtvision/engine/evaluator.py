"""Evaluation of a multi-task model over a dataset: per-task metrics and the results JSON."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mtvision.data.transforms import normalize_images
from mtvision.engine.distributed import broadcast_from_main, gather_to_main, is_distributed
from mtvision.metrics import build_metric
from mtvision.metrics.multitask import lower_is_better
from mtvision.models import MultiTaskModel
from mtvision.registry import ConfigError

# The headline metric of each task: what "best" checkpoints and summaries use. Whether higher or
# lower is better is declared in mtvision.metrics.multitask.METRIC_DIRECTION.
PRIMARY = {"det": "mAP", "seg": "mIoU", "edge": "ODS", "cls": "top1",
           "depth": "abs_err", "normals": "mean_angle", "parts": "mIoU", "sal": "maxF"}


def build_metrics(model: MultiTaskModel, model_cfg: dict[str, Any],
                  classes: dict[str, list[str]], eval_cfg: dict[str, Any]) -> dict[str, Any]:
    metrics = {}
    for task in model.task_names:
        head_cfg = model_cfg["heads"][task]
        kwargs: dict[str, Any] = {}
        if task in ("det", "seg", "cls", "parts"):
            kwargs["num_classes"] = head_cfg["num_classes"]
            kwargs["class_names"] = classes.get(task) or None
        if task == "cls":
            kwargs["multi_label"] = bool(head_cfg.get("multi_label", False))
        if task == "edge":
            kwargs["edge_thresholds"] = eval_cfg["edge_thresholds"]
            kwargs["edge_max_dist"] = eval_cfg["edge_max_dist"]
            kwargs["edge_mode"] = eval_cfg.get("edge_mode", "exact")
            kwargs["edge_matcher"] = eval_cfg.get("edge_matcher", "optimal")
            kwargs["edge_nms"] = eval_cfg.get("edge_nms", True)
            kwargs["workers"] = eval_cfg.get("workers")
        if task == "sal":
            kwargs["sal_thresholds"] = eval_cfg.get("sal_thresholds", 19)
            kwargs["sal_beta2"] = eval_cfg.get("sal_beta2", 0.3)
        metrics[task] = build_metric(task, **kwargs)
    return metrics


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu() if x.is_floating_point() else x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_to_cpu(v) for v in x]
    return x


@torch.no_grad()
def evaluate(model: MultiTaskModel, loader: DataLoader, model_cfg: dict[str, Any],
             classes: dict[str, list[str]], eval_cfg: dict[str, Any],
             device: torch.device, progress: bool = True,
             det_out: list[tuple[int, dict[str, Any]]] | None = None
             ) -> dict[str, dict[str, Any]]:
    """Run the model over ``loader``; return ``{task: {metric: value}}``.

    Only tasks the dataset labels are scored; fractions are in [0, 1]. With ``det_out`` every
    image's detections are appended to it as ``(image_id, {"boxes", "scores", "labels"})`` in
    the original image's pixels (for the COCO results file). On a COCO-format dataset
    (:func:`coco_dataset`) the box scores are COCO's own (:func:`coco_benchmark`: original
    pixels, the annotation file's areas and crowd regions), also under ``det.coco``.
    """
    metrics = build_metrics(model, model_cfg, classes, eval_cfg)
    dense = ([t for t in metrics if t in ORIGINAL_SIZE_TASKS]
             if eval_cfg.get("dense_protocol", "original") == "original" else [])
    # Any iterable of batches is scored; a DataLoader's dataset is also asked for the original
    # labels and, when it is COCO-format, scored as COCO publishes.
    dataset = getattr(loader, "dataset", None)
    if dense and dataset is not None:
        from mtvision.data.build import want_original_targets

        want_original_targets(dataset)
    coco_ds = coco_dataset(dataset) if "det" in metrics and dataset is not None else None
    if coco_ds is not None and det_out is None:
        det_out = []
    if "edge" in metrics:  # the exact edge scoring is the slow part: show its progress
        metrics["edge"].progress = progress
    seen: set[str] = set()
    max_images = eval_cfg.get("max_images")
    done = 0
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc="eval", leave=False, disable=not progress,
                          dynamic_ncols=True):
            if batch is None:  # every sample of the batch was invalid and skipped
                continue
            images = normalize_images(batch["images"].to(device, non_blocking=True))
            input_hw = tuple(images.shape[-2:])
            outputs = model(images) if dense else None  # the seg logits are needed too
            preds = _to_cpu(model.predict(images) if outputs is None
                            else model.postprocess(outputs, input_hw))
            for task, metric in metrics.items():
                if task == "edge":
                    if _update_edge(metric, preds[task], batch, input_hw):
                        seen.add(task)
                elif task in batch["targets"] and bool(batch["present"][task].any()):
                    if task in dense:
                        _update_original_size(metric, task, outputs[task], preds[task], batch,
                                              input_hw)
                    else:
                        metric.update(preds[task], batch["targets"][task],
                                      batch["present"][task])
                    seen.add(task)
            if det_out is not None and "det" in preds:
                det_out.extend(_det_in_original_pixels(preds["det"], batch,
                                                       tuple(images.shape[-2:])))
            done += images.shape[0]
            if max_images and done >= max_images:
                break
    finally:
        model.train(was_training)
    if is_distributed():
        return _merge_ranks(metrics, seen, det_out, coco_ds)
    return _scores(metrics, seen, det_out, coco_ds)


def coco_dataset(ds: Any) -> Any | None:
    """``ds`` when it is a COCO-format dataset (its ``ann_file`` and ``cat_ids``), else None."""
    return ds if hasattr(ds, "cat_ids") and hasattr(ds, "ann_file") else None


def _scores(metrics: dict[str, Any], seen: set[str],
            det_out: list[tuple[int, dict[str, Any]]] | None,
            coco_ds: Any | None) -> dict[str, dict[str, Any]]:
    """Each seen task's scores; on a COCO-format dataset the box AP is the benchmark's."""
    scores = {task: metrics[task].compute() for task in metrics if task in seen}
    if coco_ds is not None and det_out and "det" in scores:
        # The in-memory metric's areas are letterboxed box areas and its crowds boxes: the
        # headline (and so best.pt) follows COCO's own areas and crowd regions instead.
        box = coco_benchmark(coco_ds, det_out)
        scores["det"].update({name: box[stat] for name, stat in COCO_HEADLINE.items()})
        scores["det"]["per_class"] = box["per_class"]
        scores["det"]["coco"] = box
    return scores


# DetectionMetric's names of COCOeval's stats.
COCO_HEADLINE = {"mAP": "AP", "mAP50": "AP50", "mAP75": "AP75", "mAP_small": "APs",
                 "mAP_medium": "APm", "mAP_large": "APl"}


def _merge_ranks(metrics: dict[str, Any], seen: set[str],
                 det_out: list[tuple[int, dict[str, Any]]] | None,
                 coco_ds: Any | None = None) -> dict[str, dict[str, Any]]:
    """Scores of the whole dataset from the ranks' shares (torchrun).

    Each rank's accumulated statistics (per-batch confusion matrices, per-image detections
    and edge counts) go to rank 0, which scores their union exactly as one process would
    and sends the scores back; ``det_out`` gathers every rank's detections on rank 0.
    """
    mine = ({t: (m.results, m.num_samples) for t, m in metrics.items()}, seen,
            det_out if det_out is not None else [])
    gathered = gather_to_main(mine)
    scores = None
    if gathered is not None:  # rank 0
        for t, m in metrics.items():
            m.reset()
            for states, _, _ in gathered:
                m.merge(*states[t])
        seen = set().union(*(s for _, s, _ in gathered))
        if det_out is not None:
            det_out[:] = sorted((d for _, _, dets in gathered for d in dets),
                                key=lambda item: item[0])
        scores = _scores(metrics, seen, det_out, coco_ds)
    return broadcast_from_main(scores)


def _update_edge(metric: Any, preds: list, batch: dict[str, Any],
                 input_hw: tuple[int, int]) -> bool:
    """Add a batch's edge predictions; returns whether any image had edge labels.

    Where the data has the annotators' own maps (BSDS500), the image is scored as the benchmark
    does: the prediction mapped back to the original pixels and matched against every
    annotator. Other images are scored against their (resized) edge target.
    """
    from mtvision.data.transforms import unletterbox

    n = len(preds)
    gts = batch.get("edge_gts") or [None] * n
    full = [g is not None for g in gts]
    if any(full):
        metric.update([unletterbox(preds[i].numpy().astype("float32"),
                                   tuple(batch["orig_sizes"][i]), input_hw)
                       for i in range(n) if full[i]],
                      [gts[i] for i in range(n) if full[i]])
    present = batch["present"].get("edge")
    rest = ([bool(p) and not f for p, f in zip(present.tolist(), full, strict=True)]
            if present is not None else [False] * n)
    if any(rest):
        metric.update(preds, batch["targets"]["edge"], rest)
    return any(full) or any(rest)


# Dense tasks that eval.dense_protocol "original" scores at each image's own size.
ORIGINAL_SIZE_TASKS = ("seg", "parts", "depth", "normals")


def _update_original_size(metric: Any, task: str, outputs: Any, preds: list,
                          batch: dict[str, Any], input_hw: tuple[int, int]) -> None:
    """Score a batch's ``task`` at each image's original size, as mmseg does: the prediction's
    letterboxed image area resized bilinearly to the original size (seg / parts: the logits,
    then the arg-max; normals renormalised) against the labels as read (``orig_targets``).
    Images without original labels are scored at the input size."""
    import torch.nn.functional as F

    from mtvision.data.transforms import unletterbox_maps

    n = len(preds)
    origs = batch.get("orig_targets") or [None] * n
    present = batch["present"][task].tolist()
    full = [bool(p) and o is not None and task in o
            for p, o in zip(present, origs, strict=True)]
    for i in (i for i in range(n) if full[i]):
        size = tuple(batch["orig_sizes"][i])
        if task in ("seg", "parts"):
            logits = outputs[i].float()
            if tuple(logits.shape[-2:]) != input_hw:
                logits = F.interpolate(logits[None], size=input_hw, mode="bilinear",
                                       align_corners=False)[0]
            pred = unletterbox_maps(logits, size, input_hw).argmax(0).cpu()
        elif task == "normals":
            pred = F.normalize(unletterbox_maps(preds[i], size, input_hw), dim=0)
        else:  # depth
            pred = unletterbox_maps(preds[i][None], size, input_hw)[0]
        metric.update([pred], origs[i][task][None])
    rest = [bool(p) and not f for p, f in zip(present, full, strict=True)]
    if any(rest):
        metric.update(preds, batch["targets"][task], rest)


def _det_in_original_pixels(dets: list[dict[str, Any]], batch: dict[str, Any],
                            input_hw: tuple[int, int]) -> list[tuple[int, dict[str, Any]]]:
    """Undo the letterbox on each image's boxes: ``x = (x' - pad) / scale``, clipped."""
    from mtvision.data.transforms import letterbox_params

    out = []
    for det, image_id, size in zip(dets, batch["image_ids"].tolist(), batch["orig_sizes"],
                                   strict=True):
        h, w = size
        scale, _, (pad_left, pad_top) = letterbox_params((h, w), input_hw)
        boxes = det["boxes"].double().clone()
        boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad_left) / scale).clamp(0, w)
        boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad_top) / scale).clamp(0, h)
        out.append((int(image_id), {"boxes": boxes.numpy(), "scores": det["scores"].numpy(),
                                    "labels": det["labels"].numpy()}))
    return out


def coco_benchmark(ds: Any, dets: list[tuple[int, dict[str, Any]]],
                   results_file: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``dets`` (original pixels) in the COCO results format (category ids of ``ds``), written
    to ``results_file`` when given, scored with pycocotools against the dataset's own
    annotation file restricted to the images seen (crowds, areas and ids as published)."""
    import json

    from mtvision.data.io import write_json_atomic
    from mtvision.metrics.detection import coco_evaluate, coco_results

    results = coco_results([d for _, d in dets], [i for i, _ in dets], list(ds.cat_ids))
    if results_file is not None:
        write_json_atomic(results, results_file)
    with open(ds.ann_file, encoding="utf-8") as f:
        gt = json.load(f)
    # Restricted to the images seen and the categories the dataset keeps (option classes).
    seen, kept = {i for i, _ in dets}, set(ds.cat_ids)
    gt["images"] = [im for im in gt["images"] if im["id"] in seen]
    gt["annotations"] = [a for a in gt.get("annotations", [])
                         if a["image_id"] in seen and a["category_id"] in kept]
    gt["categories"] = [c for c in gt["categories"] if c["id"] in kept]
    return coco_evaluate(gt, results, ("bbox",))["bbox"]


def summary_score(results: dict[str, dict[str, Any]], key: str = "mean") -> float:
    """One number to pick the best checkpoint, always higher = better.

    ``"mean"``: the mean of the tasks' headline metrics (``PRIMARY``) for which higher is
    better (fractions in [0, 1]). Lower-is-better headlines (depth ``abs_err`` in the data's
    unit, normals ``mean_angle`` in degrees) are left out of that mean, since adding metres or
    degrees to fractions would let the unit pick the checkpoint; only when no task has a
    higher-is-better headline is the score minus the mean of the lower-is-better ones. To pick
    by depth or normals in a mixed model, name the metric (``train.best_metric``).
    ``"task.metric"``: that metric, negated when lower is better (``METRIC_DIRECTION``).
    NaN when there is nothing to average.
    """
    if key == "mean":
        heads = [(t, PRIMARY[t]) for t in results
                 if PRIMARY.get(t) is not None and PRIMARY[t] in results[t]]
        higher = [float(results[t][m]) for t, m in heads if not lower_is_better(t, m)]
        lower = [float(results[t][m]) for t, m in heads if lower_is_better(t, m)]
        if higher:
            return sum(higher) / len(higher)
        return -sum(lower) / len(lower) if lower else float("nan")
    task, _, name = key.partition(".")
    if name not in results.get(task, {}):
        raise ConfigError(f"train.best_metric '{key}' is not among the evaluation results "
                          f"({', '.join(f'{t}.{m}' for t in results for m in results[t])})")
    value = float(results[task][name])
    return -value if lower_is_better(task, name) else value


def format_table(results: dict[str, dict[str, Any]], per_class: bool = True) -> str:
    """A readable table of the scalar metrics, one row per task and metric (nested results
    such as ``det.coco`` as ``coco.AP``), then the per-class segmentation table and, when the
    results hold one, Delta_m (per task, per metric and each task's term)."""
    rows = []
    for t, m in results.items():
        if t == "delta_m":
            continue
        for k, v in m.items():
            if isinstance(v, (int, float)):
                rows.append((t, k, v))
            elif isinstance(v, dict) and not k.startswith("per_class"):
                rows += [(t, f"{k}.{k2}", v2) for k2, v2 in v.items()
                         if isinstance(v2, (int, float))]
    if not rows:
        return "(no metrics)" + _delta_m_lines(results.get("delta_m"))
    w1 = max(4, *(len(r[0]) for r in rows))
    w2 = max(6, *(len(r[1]) for r in rows))
    lines = [f"{'task':<{w1}}  {'metric':<{w2}}  {'value':>8}",
             f"{'-' * w1}  {'-' * w2}  {'-' * 8}"]
    lines += [f"{t:<{w1}}  {k:<{w2}}  {v:>8.4f}" for t, k, v in rows]
    if per_class and "per_class_IoU" in results.get("seg", {}):
        from mtvision.metrics.segmentation import format_per_class_table

        lines += ["", "seg per class:", format_per_class_table(results["seg"])]
    return "\n".join(lines) + _delta_m_lines(results.get("delta_m"))


def _delta_m_lines(dm: dict[str, Any] | None) -> str:
    """The Delta_m section of ``format_table`` ('' without one)."""
    if not dm:
        return ""
    rows = [("per task", dm["per_task"]), ("per metric", dm["per_metric"])]
    rows += [(t, v) for t, v in dm.get("tasks", {}).items()]
    w = max(len(r[0]) for r in rows)
    lines = ["Delta_m over the single-task baselines (%, higher is better):"]
    lines += [f"{name:<{w}}  {v:+8.2f}" for name, v in rows]
    return "\n\n" + "\n".join(lines)


def add_delta_m(results: dict[str, dict[str, Any]], baselines: dict[str, dict[str, Any]],
                exclude: Iterable[str] = (), source: str = "baselines") -> dict[str, Any]:
    """Put ``results["delta_m"]``: Delta_m of ``results`` over single-task ``baselines``
    (``mtvision.metrics.multitask.delta_m``; percent, per task and per metric), leaving out
    ``exclude``; a ConfigError names ``source`` when nothing can be compared."""
    from mtvision.metrics.multitask import delta_m

    tasks = {t: m for t, m in results.items() if t != "delta_m"}
    try:
        results["delta_m"] = delta_m(tasks, baselines, exclude=exclude)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    return results["delta_m"]


def check_head_classes(model_cfg: dict[str, Any], classes: dict[str, list[str] | None],
                       model_name: str, data_name: str) -> None:
    """Each head scores as many classes as ``classes`` names for its task (a ConfigError
    naming both sides otherwise: the metrics would index past the head's outputs)."""
    for task, head in (model_cfg.get("heads") or {}).items():
        names = classes.get(task)
        n = (head or {}).get("num_classes")
        if names and n is not None and n != len(names):
            raise ConfigError(f"{model_name}: its {task} head has {n} classes but {data_name} "
                              f"has {len(names)} {task} classes {list(names)}")


def evaluate_checkpoint(cfg: dict[str, Any], checkpoint: str, out: str | None = None,
                        device: str = "auto", split: str | None = None,
                        progress: bool = True,
                        baselines: str | os.PathLike[str] | None = None,
                        delta_m_exclude: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Evaluate ``checkpoint`` on the data of ``cfg`` (``data.val_split`` unless ``split``);
    write the results JSON to ``out`` (default: beside the checkpoint, ``metrics.json``).

    With ``baselines`` (a JSON of single-task results or a YAML of published numbers,
    ``mtvision.metrics.baselines``) the
    results also hold ``"delta_m"``, leaving out ``delta_m_exclude`` and the model's auxiliary
    tasks (``model.aux_tasks`` of the checkpoint's config).
    """
    from pathlib import Path

    from mtvision.data.build import (
        build_dataset,
        build_loader,
        check_classes_agree,
        dataset_classes,
        head_class_counts,
    )
    from mtvision.data.io import write_json_atomic
    from mtvision.engine.checkpoint import load_checkpoint, load_weights
    from mtvision.engine.device import resolve_device
    from mtvision.metrics.baselines import load_baselines
    from mtvision.metrics.detection import coco_results
    from mtvision.models import build_model

    # Read first: a wrong path should fail before a long evaluation, not after.
    base = load_baselines(baselines) if baselines is not None else None
    dev = resolve_device(device)
    state = load_checkpoint(checkpoint, map_location=dev)
    model_cfg = state["config"]["model"]
    model = build_model(model_cfg)
    load_weights(model, state, checkpoint)
    model.to(dev)
    dcfg = cfg["data"]
    ds = build_dataset(dcfg, split or dcfg["val_split"], train=False)
    data_name = f"dataset '{dcfg['root']}' split '{split or dcfg['val_split']}'"
    data_classes = dataset_classes(ds)
    classes = state.get("classes") or data_classes
    check_classes_agree(classes, data_classes, f"checkpoint {checkpoint}", data_name)
    check_head_classes(model_cfg, {t: classes.get(t) or data_classes.get(t)
                                   for t in (*classes, *data_classes)},
                       f"checkpoint {checkpoint}", data_name)
    loader = build_loader(ds, dcfg["val_batch_size"] or dcfg["batch_size"], dcfg["num_workers"],
                          train=False, num_classes=head_class_counts(model_cfg),
                          pin_memory=dev.type == "cuda")
    # A COCO-format dataset is also scored as COCO publishes: its detections written in the
    # results format, evaluated on the original annotation file at the original resolution.
    # (evaluate scores it; the results file is written here.)
    coco_ds = coco_dataset(ds) if "det" in model.task_names else None
    dets: list[tuple[int, dict[str, Any]]] | None = [] if coco_ds is not None else None
    results = evaluate(model, loader, model_cfg, classes, cfg["eval"], dev, progress, dets)
    out_path = Path(out) if out else Path(checkpoint).with_name("metrics.json")
    if dets and "det" in results:
        write_json_atomic(coco_results([d for _, d in dets], [i for i, _ in dets],
                                       list(ds.cat_ids)),
                          out_path.with_name(out_path.stem + "_coco_results.json"))
    if base is not None:
        exclude = set(delta_m_exclude) | set(model_cfg.get("aux_tasks") or ())
        add_delta_m(results, base, exclude, f"baselines {baselines}")
    write_json_atomic(results, out_path)
    return results


def headline_score(results: dict[str, dict[str, Any]], key: str,
                   aux_tasks: list[str] | tuple[str, ...] = ()) -> float:
    """``summary_score`` of ``results`` without the auxiliary tasks (best checkpoint choice);
    NaN when no main task has results."""
    main = {t: m for t, m in results.items() if t not in aux_tasks}
    return summary_score(main, key) if main else float("nan")
