"""The training loop: one step (forward, per-task losses, balanced backward, gradient
synchronisation, clipping, optimizer and EMA), periodic evaluation, logging and atomic,
resumable checkpoints. Its parts live beside it: the optimizer and schedule (``optim``), the
start-up checks (``checks``), devices, AMP and seeding (``device``), DDP and the collectives
(``distributed``), checkpoints (``checkpoint``), EMA (``ema``), ``torch.compile``
(``compile``)."""

from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mtvision.balancing import build_balancer
from mtvision.balancing.task_gradients import FeatureCut, pairwise_cosines
from mtvision.config import save_config
from mtvision.data.build import (
    build_dataset,
    build_loader,
    check_classes_agree,
    dataset_classes,
    head_class_counts,
    move_batch,
)
from mtvision.data.io import write_json_atomic
from mtvision.engine import distributed as dist
from mtvision.engine.checkpoint import (
    load_checkpoint,
    load_weights,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from mtvision.engine.checks import (
    TrainingError,
    check_best_metric,
    check_heads_match,
    check_sharing_balancer,
    check_tasks_overlap,
    check_writable,
)
from mtvision.engine.compile import compile_backend, compile_model
from mtvision.engine.device import amp_dtype, resolve_device, seed_everything, tune_cudnn
from mtvision.engine.ema import build_ema, swapped_weights
from mtvision.engine.evaluator import evaluate, format_table, headline_score
from mtvision.engine.logger import RunLogger, plot_task_interference, plot_training_curves
from mtvision.engine.optim import build_optimizer, lr_factor
from mtvision.models import MultiTaskModel, build_model
from mtvision.registry import ConfigError


def _tensors(x: Any) -> list[Tensor]:
    """The tensors of a head's output (a tensor, or dicts and lists of them)."""
    if isinstance(x, Tensor):
        return [x] if x.requires_grad else []
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    return []


class Trainer:
    """Trains ``cfg`` in ``work_dir``; ``resume`` continues from ``work_dir/last.pt``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains on its share of every global
    batch with DistributedDataParallel (see ``mtvision.engine.distributed``); only rank 0
    writes files, logs and progress bars. After an elastic restart (``--max-restarts``) the
    run resumes from ``last.pt`` by itself.
    """

    def __init__(self, cfg: dict[str, Any], work_dir: str | Path | None = None,
                 resume: bool = False, device: str = "auto", progress: bool = True) -> None:
        self.cfg = cfg
        self.work_dir = Path(work_dir or cfg.get("work_dir") or "runs/default")
        cfg["work_dir"] = str(self.work_dir)
        self.device = resolve_device(device)
        self.distributed = dist.init_distributed(self.device.type)
        if self.distributed and self.device.type == "cuda":
            # One GPU per process, whatever index was asked for (init_distributed set it).
            self.device = torch.device("cuda", dist.local_rank())
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = self.rank == 0
        self.progress = progress and self.main
        tcfg = cfg["train"]
        seed_everything(tcfg["seed"], tcfg["deterministic"])
        tune_cudnn(self.device, tcfg["deterministic"])
        if self.main:
            check_writable(self.work_dir)
        if not resume and dist.restart_count() > 0 and (self.work_dir / "last.pt").is_file():
            resume = True  # torchrun restarted the workers: go on from the last checkpoint

        dcfg = cfg["data"]
        # Rank 0 first: it generates the synthetic data (data.synthetic) the others then reuse,
        # instead of every rank writing the same files at once.
        if not self.main:
            dist.barrier()
        self.train_set = build_dataset(dcfg, dcfg["train_split"], train=True)
        self.val_set = build_dataset(dcfg, dcfg["val_split"], train=False)
        if self.main:
            dist.barrier()
        self.classes = dataset_classes(self.train_set)
        check_classes_agree(self.classes, dataset_classes(self.val_set),
                            f"split '{dcfg['train_split']}'", f"split '{dcfg['val_split']}'")
        check_heads_match(cfg, self.classes)
        check_tasks_overlap(cfg, self.train_set)
        check_best_metric(cfg)
        self.accumulate = tcfg["accumulate"]
        limits, pin = head_class_counts(cfg["model"]), self.device.type == "cuda"
        self.train_loader = build_loader(self.train_set, dcfg["batch_size"], dcfg["num_workers"],
                                         train=True, seed=tcfg["seed"], rank=self.rank,
                                         world=self.world, num_classes=limits, pin_memory=pin)
        self.val_loader = build_loader(self.val_set, dcfg["val_batch_size"] or dcfg["batch_size"],
                                       dcfg["num_workers"], train=False, rank=self.rank,
                                       world=self.world, num_classes=limits, pin_memory=pin)
        # Samples of the global order one optimizer step consumes (all ranks, micro-batches).
        self.step_samples = dcfg["batch_size"] * self.accumulate * self.world
        if len(self.train_loader) // self.accumulate == 0:
            raise ConfigError(f"data.batch_size {dcfg['batch_size']} x train.accumulate "
                              f"{self.accumulate} x {self.world} process(es) is larger than "
                              f"the {len(self.train_set)} training images")

        self.model: MultiTaskModel = build_model(cfg["model"]).to(self.device)
        if tcfg["sync_bn"]:
            if self.device.type != "cuda":
                raise ConfigError("train.sync_bn needs CUDA devices (PyTorch's SyncBatchNorm "
                                  "has no CPU kernels); set it to false")
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        # NHWC helps CNN backbones with cuDNN; on CPUs the heads' GroupNorm and resizes lose
        # more than the convolutions gain, hence off by default.
        self.memory_format = (torch.channels_last if tcfg["channels_last"]
                              else torch.contiguous_format)
        self.model.to(memory_format=self.memory_format)
        self.ema = build_ema(self.model, tcfg["ema"])
        backend = compile_backend(tcfg["compile"])
        if backend is not None:
            compile_model(self.model, backend)
        self.balancer = build_balancer(cfg["balancer"], self.model.task_names).to(self.device)
        check_sharing_balancer(cfg, self.model, self.balancer.requires)
        if self.accumulate > 1 and self.balancer.requires == "feature":
            raise ConfigError(f"train.accumulate {self.accumulate} needs balancer.mode 'param' "
                              "(a feature-mode update is back-propagated through each batch's "
                              "own graph)")
        # DDP broadcasts rank 0's weights at construction; its gradient hooks average the
        # gradients of the loss-based path (gradient-based methods reduce their own buffers).
        self.ddp: nn.Module | None = None
        if self.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                else None, find_unused_parameters=True)
        self.optimizer = build_optimizer(self.model, tcfg["optimizer"])
        params = list(self.model.parameters()) + list(self.balancer.parameters())
        if self.balancer_params():
            self.optimizer.add_param_group({"params": self.balancer_params(),
                                            "weight_decay": 0.0, "lr": tcfg["optimizer"]["lr"]})
        self.params = [p for p in params if p.requires_grad]
        self.shared_params = self.model.shared_parameters()
        shared = {id(p) for p in self.shared_params}
        # What the gradient-based path still has to average after the balancer's backward.
        self.unsynced_params = [p for p in self.params if self.balancer.requires != "param"
                                or id(p) not in shared]
        self.epoch_len = len(self.train_loader) // self.accumulate
        self.total_iters = tcfg["max_iters"] or tcfg["epochs"] * self.epoch_len
        self.num_epochs = math.ceil(self.total_iters / self.epoch_len)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(it, self.total_iters, tcfg["scheduler"]))
        self.amp_dtype = amp_dtype(tcfg["amp"], self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.iteration = 0
        self.nonfinite_in_a_row = 0
        self.best_score: float | None = None
        self.last_metrics: dict[str, Any] = {}
        if resume:
            self._resume()
        # Only once set-up has succeeded: a failed start (or a refused --resume) leaves the
        # config of the run in the folder as it was.
        if self.main:
            save_config(cfg, self.work_dir / "config.yaml")
        self.logger = (RunLogger(self.work_dir, tensorboard=tcfg["tensorboard"],
                                 resume_at=self.iteration if resume else None)
                       if self.main else None)

    def balancer_params(self) -> list[nn.Parameter]:
        return [p for p in self.balancer.parameters() if p.requires_grad]

    # -- checkpoints ------------------------------------------------------------------------
    def _state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "config": self.cfg, "classes": self.classes,
            "epoch": self.iteration // self.epoch_len, "iteration": self.iteration,
            "best_score": self.best_score, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "balancer": self.balancer.state_dict(), "rng": rng,
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def save(self, name: str = "last.pt") -> Path | None:
        """Write a checkpoint: rank 0 writes it (the ranks hold the same weights), with every
        rank's own RNG state, so every rank calls this."""
        rng = dist.gather_to_main(rng_state())
        if not self.main:
            return None
        path = self.work_dir / name
        try:
            return save_checkpoint(self._state(rng), path)
        except OSError as e:
            # save_checkpoint writes a temp file and renames it: the previous one is intact.
            kept = " (the previous one is kept)" if path.is_file() else ""
            raise TrainingError(f"cannot write checkpoint {path}: {e.strerror or e}{kept}") \
                from None

    def _log(self, record: dict[str, Any]) -> None:
        if self.logger is not None:
            self.logger.log(record)

    def _resume(self) -> None:
        path = self.work_dir / "last.pt"
        if not path.is_file():
            raise ConfigError(f"--resume: no checkpoint at {path}")
        # On the CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest.
        if self.main:
            # Temp files of checkpoints a killed run was writing: never valid, never read.
            for stale in self.work_dir.glob(".*.pt.*.tmp"):
                stale.unlink(missing_ok=True)
        state = load_checkpoint(path, map_location="cpu")
        load_weights(self.model, state, path, config_model=self.cfg["model"], ema=False)
        if self.ema is not None:
            if state.get("ema"):
                self.ema.load_state_dict(state["ema"])
            else:  # EMA switched on for a run that had none: it starts from here
                self.ema = build_ema(self.model, self.cfg["train"]["ema"])
        # Same number of classes is not enough: label k must still mean the same class.
        check_classes_agree(state.get("classes") or {}, self.classes, f"checkpoint {path}",
                            f"split '{self.cfg['data']['train_split']}'")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # empty when the run was written without fp16 scaling
            self.scaler.load_state_dict(state["scaler"])
        self.balancer.load_state_dict(state["balancer"])
        self.iteration = int(state["iteration"])
        note = restore_rng_state(state["rng"], self.rank, self.world, self.cfg["train"]["seed"],
                                 self.iteration)
        self.best_score = state.get("best_score")
        if self.main:
            print(f"resumed from {path} at iteration {self.iteration}")
            if note:
                warnings.warn(f"{path}: {note}", stacklevel=2)

    # -- one step ---------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any] | list[dict[str, Any]]
                   ) -> dict[str, float] | None:
        """One optimizer step on a batch, or on a list of micro-batches accumulated: forward,
        per-task losses, balanced backward, gradient synchronisation, clip, step. None when
        skipped."""
        batches = batch if isinstance(batch, list) else [batch]
        k = len(batches)
        self.optimizer.zero_grad(set_to_none=True)
        # The balancer's random draws: a function of (seed, iteration), alike on every rank.
        self.balancer.reseed(self.cfg["train"]["seed"], self.iteration)
        # The tasks this step trains: those any micro-batch of any rank labels. Every
        # micro-batch and rank then hands the balancer the same tasks (same G rows).
        # Host flags from the loader (the trainer never moves them): no device sync.
        local = {t for b in batches for t, p in b["present"].items()
                 if t in self.model.heads and bool(torch.as_tensor(p).any())}
        tasks = dist.global_presence(self.model.task_names, local, self.device)
        if not tasks:  # no image of this step is labelled for any task of the model
            return None
        penalty = self.model.regularization()
        totals: dict[str, Any] = {}
        weights: dict[str, Any] = {}
        for i, micro in enumerate(batches):
            task_losses, comps, cut, feats = self._forward(micro, tasks, sync=i == k - 1)
            # Values averaged over the ranks, gradients local: every rank weighs alike and
            # agrees on skipping a non-finite step.
            task_losses = dist.global_loss_values(task_losses)
            checked = {**task_losses, **({"sharing_penalty": penalty} if penalty is not None
                                         else {})}
            values = torch.stack([v.detach().float().reshape(()) for v in checked.values()])
            # Sync (one per micro-batch): a non-finite loss must stop before the balancer's
            # backward, whose state (loss histories, EMAs) it would poison.
            bad = [] if bool(torch.isfinite(values).all()) else [
                t for t, v in zip(checked, values.tolist(), strict=True) if not math.isfinite(v)]
            if bad:
                self.optimizer.zero_grad(set_to_none=True)
                self._nonfinite(f"non-finite loss in task(s) {', '.join(bad)}")
                return None
            weights = self.balancer.backward(task_losses, self.shared_params,
                                             cut if cut is not None else feats,
                                             self.scaler.scale, micro=(i, k))
            for key, v in [*((f"{t}/{c}", x) for t, parts in comps.items()
                             for c, x in parts.items()), *task_losses.items()]:
                totals[key] = totals.get(key, 0.0) + v.detach() / k
        if penalty is not None:  # after the balancer, which may rebind the shared .grad
            self.scaler.scale(penalty).backward()
        if self.distributed and (self.balancer.requires != "losses" or self.balancer_params()):
            # DDP's hooks averaged the model's gradients on the loss-based path; the rest
            # (heads and balancer parameters of the gradient-based path) in one collective.
            dist.average_gradients(self.unsynced_params if self.balancer.requires != "losses"
                                   else self.balancer_params())
        self.scaler.unscale_(self.optimizer)
        # The norm is computed even without clipping: a NaN gradient must never reach the
        # optimizer, whose moment estimates it would poison for good.
        gnorm = torch.nn.utils.clip_grad_norm_(self.params,
                                               self.cfg["train"]["grad_clip"] or math.inf)
        # Sync (one per step): a non-finite gradient must never reach the optimizer.
        if not torch.isfinite(gnorm):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()
            if self.amp_dtype != torch.float16:  # fp16 overflow is the scaler's business
                self._nonfinite("non-finite gradient")
            return None
        self.nonfinite_in_a_row = 0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        # Detached tensors, not floats: reading them back is a device sync, done only when
        # the progress bar or the log needs them.
        out: dict[str, Any] = dict(totals)
        out.update({f"w/{t}": w for t, w in weights.items()})
        if penalty is not None:
            out["sharing_penalty"] = penalty.detach()
        gram = getattr(self.balancer, "stats", {}).get("gram")
        if gram is not None:
            out.update(pairwise_cosines(gram, tasks))
        return out

    def _forward(self, batch: dict[str, Any], tasks: list[str], sync: bool
                 ) -> tuple[dict[str, Any], dict[str, dict[str, Any]], Any, Any]:
        """Per-task losses (``tasks`` order), their components, the feature cut (mode
        ``feature``) and the shared features of one micro-batch.

        ``sync``: the micro-batch whose backward averages the gradients over the ranks. On the
        loss-based path that one runs through the DDP wrapper (its hooks do the averaging);
        every other forward calls the model itself, which DDP's hooks ignore.
        """
        batch = move_batch(batch, self.device)  # presence flags stay on the host
        ctx = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype
               else nullcontext())
        images = batch["images"].contiguous(memory_format=self.memory_format)
        size = (images.shape[-2], images.shape[-1])
        with ctx:
            if self.ddp is not None and sync and self.balancer.requires == "losses":
                feats, cut = None, None
                outputs = self.ddp(images)
            else:
                feats = self.model.extract(images)
                head_feats, cut = feats, None
                if self.balancer.requires == "feature":
                    # The heads run on detached copies, so each task's backward stops at the
                    # shared features and one backward through the backbone follows.
                    cut, head_feats = FeatureCut.of(feats, self.model.head_inputs())
                outputs = self.model.forward_heads(head_feats, size)
            comps = self.model.losses(outputs, batch["targets"], batch["present"], tasks)
        losses = {t: sum(c.float() for c in parts.values()) for t, parts in comps.items()}
        for t in tasks:
            if t not in losses:
                # Labelled in another micro-batch or on another rank: a zero that is part of
                # the graph, so this head takes part in the backward with zero gradients.
                losses[t] = sum(x.float().sum() for x in _tensors(outputs[t])) * 0.0
        return {t: losses[t] for t in tasks}, comps, cut, feats

    def _nonfinite(self, what: str) -> None:
        self.nonfinite_in_a_row += 1
        limit = self.cfg["train"]["max_nonfinite_steps"]
        warnings.warn(f"iteration {self.iteration}: {what}; step skipped "
                      f"({self.nonfinite_in_a_row} in a row, stopping at {limit})", stacklevel=3)
        if self.nonfinite_in_a_row >= limit:
            raise TrainingError(
                f"{limit} steps in a row skipped ({what} at iteration {self.iteration}); "
                f"stopped, the last good checkpoint is {self.work_dir / 'last.pt'} "
                "(lower train.optimizer.lr or set train.grad_clip)")

    def _check_replicas(self) -> None:
        problem = dist.replica_divergence(self.model.named_parameters())
        if problem:
            raise TrainingError(
                f"train.check_replicas: after iteration {self.iteration} {problem}; the "
                "processes drifted apart (a random draw or an update that differs between "
                f"ranks), stopped; the last checkpoint is {self.work_dir / 'last.pt'}")

    # -- loop -------------------------------------------------------------------------------
    def run_eval(self) -> dict[str, Any]:
        # Periodic evaluations use the fast edge matcher and dense scoring unless
        # eval.train_edge_mode / train_dense_protocol say otherwise; tools/eval.py scores
        # with the benchmarks' own (eval.edge_mode, eval.dense_protocol).
        eval_cfg = {**self.cfg["eval"], "edge_mode": self.cfg["eval"]["train_edge_mode"],
                    "dense_protocol": self.cfg["eval"]["train_dense_protocol"]}
        with swapped_weights(self.model, self.ema.weights() if self.ema else None):
            res = evaluate(self.model, self.val_loader, self.cfg["model"], self.classes,
                           eval_cfg, self.device, self.progress)
        # Auxiliary tasks are evaluated and logged, but do not choose the best checkpoint.
        score = headline_score(res, self.cfg["train"]["best_metric"], self.model.aux_tasks)
        self._log({"type": "eval", "iter": self.iteration,
                   "epoch": self.iteration / self.epoch_len, "metrics": res, "score": score})
        if res and (self.best_score is None or score > self.best_score):
            self.best_score = score
            self.save("best.pt")
        self.last_metrics = res
        return res

    def fit(self) -> dict[str, Any]:
        """Train to the end (or from the resumed iteration); return the final val metrics."""
        tcfg = self.cfg["train"]
        self.model.train()
        bar = tqdm(total=self.total_iters, initial=self.iteration, desc="train",
                   disable=not self.progress, dynamic_ncols=True)
        t_last, it_last = time.time(), self.iteration
        evaluated_at = saved_at = -1
        while self.iteration < self.total_iters:
            epoch, start = divmod(self.iteration, self.epoch_len)
            self.train_loader.sampler.set_epoch(epoch, start * self.step_samples)
            # Worker seeds come from the loader's generator: fix them per epoch so a resumed
            # run draws the same augmentations as an uninterrupted one.
            self.train_loader.generator.manual_seed(tcfg["seed"] * 100003 + epoch)
            if hasattr(self.train_set, "set_epoch"):
                self.train_set.set_epoch(tcfg["seed"] * 100003 + epoch)
            for batch in _grouped(self.train_loader, self.accumulate):
                stats = self.train_step(batch if self.accumulate > 1 else batch[0])
                self.scheduler.step()
                self.iteration += 1
                bar.update(1)
                log_now = self.iteration % tcfg["log_interval"] == 0 or self.iteration == 1
                if stats is not None and (log_now or self.iteration % 5 == 0):
                    stats = {k: float(v) for k, v in stats.items()}
                    bar.set_postfix({t: f"{stats[t]:.3f}" for t in self.model.task_names
                                     if t in stats}, refresh=False)
                if stats is not None and log_now:
                    now = time.time()
                    self._log({
                        "type": "train", "iter": self.iteration,
                        "epoch": self.iteration / self.epoch_len,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "losses": {t: stats[t] for t in self.model.task_names if t in stats},
                        "components": {k: v for k, v in stats.items() if "/" in k
                                       and not k.startswith(("w/", "cos/"))},
                        "weights": {k[2:]: v for k, v in stats.items() if k.startswith("w/")},
                        "cos": {k[4:]: v for k, v in stats.items() if k.startswith("cos/")},
                        **({"sharing_penalty": stats["sharing_penalty"]}
                           if "sharing_penalty" in stats else {}),
                        "sec_per_iter": (now - t_last) / max(self.iteration - it_last, 1),
                    })
                    t_last, it_last = now, self.iteration
                if tcfg["check_replicas"] and self.iteration % tcfg["check_replicas"] == 0:
                    self._check_replicas()  # before a checkpoint could keep drifted weights
                every = tcfg["checkpoint_iters"]
                if every and self.iteration % every == 0 and self.iteration < self.total_iters:
                    self.save("last.pt")
                if self.iteration >= self.total_iters:
                    break
            epoch_done = self.iteration // self.epoch_len
            finished = self.iteration >= self.total_iters
            if finished or epoch_done % tcfg["eval_interval"] == 0:
                self.run_eval()
                evaluated_at = self.iteration
            if finished or epoch_done % tcfg["checkpoint_interval"] == 0:
                self.save("last.pt")
                saved_at = self.iteration
        bar.close()
        if evaluated_at != self.iteration:
            self.run_eval()
        if saved_at != self.iteration:
            self.save("last.pt")
        if self.logger is not None:
            write_json_atomic(self.last_metrics, self.work_dir / "val_metrics.json")
            plot_training_curves(self.logger.path, self.work_dir / "curves.png")
            plot_task_interference(self.logger.path, self.work_dir / "interference.png")
            self.logger.close()
        return self.last_metrics


def _grouped(loader: Any, k: int) -> Any:
    """The loader's batches in lists of ``k`` (the micro-batches of one step); an incomplete
    last group is dropped, as ``drop_last`` drops an incomplete batch."""
    group: list[Any] = []
    for batch in loader:
        group.append(batch)
        if len(group) == k:
            yield group
            group = []


def train(cfg: dict[str, Any], work_dir: str | Path | None = None, resume: bool = False,
          device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Train a resolved config; print and return the final validation metrics."""
    trainer = None
    try:
        trainer = Trainer(cfg, work_dir, resume, device, progress)
        metrics = trainer.fit()
    finally:
        if trainer is not None and trainer.distributed:
            dist.cleanup()
    if trainer.main:
        print(format_table(metrics))
        print(f"checkpoints: {trainer.work_dir / 'last.pt'}, {trainer.work_dir / 'best.pt'}")
    return metrics
