"""The epoch loop shared by the three training stages.

A stage (see :mod:`spgim.train.stages`) supplies the model, its parameter groups, the training
set, a loss for a batch and a validation score; this loop owns everything else: the optimizer
and per-step learning-rate schedule, DistributedDataParallel and the DistributedSampler, exact
resume (optimizer, scheduler, RNG and the position inside an epoch), ``last.pt`` / ``best.pt``
every epoch, Ctrl-C and SIGTERM saving a resumable checkpoint, and logging (tqdm, TensorBoard,
``log.jsonl`` per step, one summary line per epoch).
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import time
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from spgim.errors import SpgimError

from .checkpoint import save_checkpoint
from .distributed import DistInfo, all_reduce_mean, barrier
from .recipes import lr_factor


class Stage(Protocol):
    """What a training stage provides to :func:`run_training`."""

    branch: str
    config: dict[str, Any]
    recipe: dict[str, Any]
    model: nn.Module
    train_set: Dataset[Any]

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups, each with its maximum ``lr``."""
        ...

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """The training loss of a batch already on the device (``model`` may be DDP-wrapped)."""
        ...

    def validate(self) -> dict[str, float]:
        """Validation numbers; ``"score"`` (lower is better) picks ``best.pt``."""
        ...

    def checkpoint_extra(self) -> dict[str, Any]:
        """Stage data stored in every checkpoint (tokenizer, SPD link, ...)."""
        ...


def build_optimizer(recipe: dict[str, Any], groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay, or Adam, over parameter groups with their own max LR."""
    if recipe["optimizer"] == "sgd":
        return torch.optim.SGD(groups, momentum=recipe["momentum"], weight_decay=recipe["weight_decay"])
    if recipe["optimizer"] == "adam":
        return torch.optim.Adam(groups)
    raise SpgimError(f"unknown optimizer {recipe['optimizer']!r}")


class _ForcedStop(KeyboardInterrupt):
    """A second Ctrl-C: stop at once, without a checkpoint of a half-finished step."""


class _StopRequests:
    """Ctrl-C and SIGTERM ask the loop to stop at the next step boundary.

    Stopping between steps keeps weights, optimizer, scheduler and RNG consistent, so the
    checkpoint written then resumes exactly; a second signal stops at once.
    """

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise _ForcedStop
        self.requested = True

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was asked for."""
        if self.requested:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def run_training(
    stage: Stage,
    *,
    out_dir: Path,
    info: DistInfo,
    seed: int,
    workers: int,
    resume_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``stage`` to ``recipe["epochs"]``; returns the final training state summary.

    Args:
        stage: the stage to train; its model already holds resumed weights if resuming.
        out_dir: the run folder (``last.pt``, ``best.pt``, ``log.jsonl``, ``tb/``).
        info: this process's place in a torchrun job.
        seed: base of the sampler's shuffling (the datasets carry their own seeds).
        workers: DataLoader worker processes.
        resume_state: ``extra["train_state"]`` of the checkpoint to continue from.
    """
    recipe = stage.recipe
    model = stage.model.to(info.device)
    wrapped: nn.Module = model
    if info.distributed:
        wrapped = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    optimizer = build_optimizer(recipe, stage.param_groups())
    batch_size = recipe["batch_size"]
    sampler: DistributedSampler[Any] = DistributedSampler(
        stage.train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed, drop_last=True
    )
    steps_per_epoch = len(sampler) // batch_size
    if recipe.get("max_steps_per_epoch"):
        steps_per_epoch = min(steps_per_epoch, recipe["max_steps_per_epoch"])
    if steps_per_epoch < 1:
        raise SpgimError(
            f"the training set has {len(cast(Sized, stage.train_set))} samples, fewer than one batch of {batch_size} "
            f"per process; lower --batch-size or add data"
        )
    epochs = recipe["epochs"]
    total_steps = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, total_steps, recipe)
    )
    state: dict[str, Any] = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "best_score": None,
        "history": [],
    }
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        torch.set_rng_state(resume_state["rng"])
        if info.device.type == "cuda" and resume_state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(resume_state["cuda_rng"])
        state.update({k: resume_state[k] for k in ("epoch", "step_in_epoch", "global_step", "best_score", "history")})
    writer = _tensorboard(out_dir) if info.is_main else None
    log = (out_dir / "log.jsonl").open("a") if info.is_main else None

    def save(name: str, extra_state: dict[str, Any]) -> None:
        if not info.is_main:
            return
        train_state = {
            **extra_state,
            "stage": stage.branch,
            "recipe": recipe,
            "seed": seed,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if info.device.type == "cuda" else [],
        }
        extra = {**stage.checkpoint_extra(), "train_state": train_state}
        save_checkpoint(out_dir / name, branch=stage.branch, config=stage.config, model=model, extra=extra)

    stop = _StopRequests()
    try:
        with stop.installed():
            while state["epoch"] < epochs:
                epoch = state["epoch"]
                started = time.perf_counter()
                losses = _run_epoch(
                    stage,
                    wrapped,
                    optimizer,
                    scheduler,
                    sampler,
                    state,
                    info,
                    steps_per_epoch=steps_per_epoch,
                    workers=workers,
                    writer=writer,
                    log=log,
                    stop=stop,
                )
                train_loss = all_reduce_mean(sum(losses) / max(1, len(losses)), info)
                numbers = stage.validate() if info.is_main else {}
                barrier(info)
                score = numbers.get("score")
                improved = score is not None and (state["best_score"] is None or score < state["best_score"])
                if improved:
                    state["best_score"] = score
                summary = {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    **numbers,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - started,
                }
                state["history"].append(summary)
                state.update({"epoch": epoch + 1, "step_in_epoch": 0})
                save("last.pt", state)
                if improved:
                    save("best.pt", state)
                if info.is_main:
                    _epoch_line(stage.branch, summary, epochs, improved)
                    if writer is not None:
                        for key, value in summary.items():
                            if isinstance(value, int | float) and key not in ("epoch",):
                                writer.add_scalar(f"epoch/{key}", value, epoch + 1)
                stop.check()
    except _ForcedStop:
        raise SpgimError(
            f"stopped at once by a second interrupt; {out_dir / 'last.pt'} is from the last finished epoch",
            exit_code=130,
        ) from None
    except KeyboardInterrupt:
        save("last.pt", state)
        raise SpgimError(
            f"interrupted in epoch {state['epoch'] + 1} after {state['step_in_epoch']} steps; "
            f"resume with --resume {out_dir / 'last.pt'}",
            exit_code=130,
        ) from None
    finally:
        if writer is not None:
            writer.close()
        if log is not None:
            log.close()
    return state


def _run_epoch(
    stage: Stage,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    sampler: DistributedSampler[Any],
    state: dict[str, Any],
    info: DistInfo,
    *,
    steps_per_epoch: int,
    workers: int,
    writer: Any,
    log: Any,
    stop: _StopRequests,
) -> list[float]:
    """One epoch from ``state["step_in_epoch"]`` on; ``state`` advances after every step."""
    from tqdm import tqdm

    epoch, batch_size = state["epoch"], stage.recipe["batch_size"]
    sampler.set_epoch(epoch)
    set_epoch = getattr(stage.train_set, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)
    # The sampler's order is a function of (seed, epoch); skipping the steps already taken
    # makes a resumed epoch see exactly the batches the interrupted one had left.
    indices = list(sampler)[state["step_in_epoch"] * batch_size : steps_per_epoch * batch_size]
    if workers > 0:
        # Workers are forked: garbage left here (a PyAV frame whose scaler owns a thread pool, say) would be
        # finalised in a child that has none of those threads, and hang it waiting for them.
        gc.collect()
    loader = DataLoader(
        stage.train_set,
        batch_size=batch_size,
        sampler=indices,
        # Its own generator: a loader drawing its workers' base seed from the global RNG would make a
        # resumed run's dropout differ from the uninterrupted run's.
        generator=torch.Generator().manual_seed(epoch),
        num_workers=workers,
        drop_last=True,
        pin_memory=info.device.type == "cuda",
    )
    stage.model.train()
    losses: list[float] = []
    bar = tqdm(
        total=steps_per_epoch,
        initial=state["step_in_epoch"],
        desc=f"{stage.branch} {epoch + 1}",
        unit="step",
        disable=not info.is_main or not sys.stderr.isatty(),
        leave=False,
    )
    batches = iter(loader)
    with bar:
        while state["step_in_epoch"] < steps_per_epoch:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except RuntimeError:
                # Ctrl-C reaches DataLoader workers too; the one that dies first breaks the fetch.
                stop.check()
                raise
            loss = stage.loss(model, _to_device(batch, info.device))
            if not torch.isfinite(loss):
                raise SpgimError(
                    f"the {stage.branch} loss became {loss.item()} at step {state['global_step']}; "
                    "lower the learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            value = loss.item()
            losses.append(value)
            state["step_in_epoch"] += 1
            state["global_step"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if writer is not None:
                writer.add_scalar("train/loss", value, state["global_step"])
                writer.add_scalar("train/lr", lr, state["global_step"])
            if log is not None:
                record = {
                    "epoch": epoch + 1,
                    "step": state["step_in_epoch"],
                    "global_step": state["global_step"],
                    "loss": value,
                    "lr": lr,
                }
                log.write(json.dumps(record) + "\n")
                log.flush()
            stop.check()
    return losses


def _tensorboard(out_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; a broken install should not stop training
        return None
    return SummaryWriter(str(out_dir / "tb"))


def _epoch_line(branch: str, summary: dict[str, Any], epochs: int, improved: bool) -> None:
    extras = " ".join(
        f"{key} {value:.4g}"
        for key, value in summary.items()
        if key not in ("epoch", "train_loss", "lr", "seconds", "score") and isinstance(value, int | float)
    )
    print(
        f"{branch} epoch {summary['epoch']}/{epochs}: train loss {summary['train_loss']:.4g} {extras}"
        f"{' (best)' if improved else ''} lr {summary['lr']:.3g} {summary['seconds']:.1f} s",
        flush=True,
    )
