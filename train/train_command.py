"""``spgim train`` and ``spgim eval``: argument parsing and the glue between stages, loop and files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError

TRAIN_EXAMPLE = """example:
  spgim data synth --out data --count 200 --size 256 --seed 0
  spgim train caption --data data --config tiny --out runs/caption
  spgim train spd --data data --config tiny --out runs/spd --init runs/caption/best.pt
  spgim train spgm --data data --config tiny --out runs/spgm --spd runs/spd/best.pt
  torchrun --nproc_per_node 2 -m spgim train spgm --data data --config tiny --out runs/spgm --spd runs/spd/best.pt
  spgim train spgm --data data --config tiny --out runs/spgm --spd runs/spd/best.pt --resume runs/spgm/last.pt
  spgim train spgm-seq --data data --config live --out runs/seq --spd runs/spd/best.pt --init runs/spgm/best.pt \
      --recurrent"""

EVAL_EXAMPLE = """example:
  spgim eval --spd runs/spd/best.pt --spgm runs/spgm/best.pt --data data --out metrics.json"""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``spgim train``."""
    parser.add_argument(
        "stage",
        choices=["caption", "spd", "spgm", "spgm-seq"],
        help="which stage to train (spgm-seq: SPGM fine-tuned on generated sequences, closed-loop as a stream runs it)",
    )
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (docs/data-layout.md)")
    parser.add_argument("--config", default="tiny", help="model configuration: paper, tiny or live (default tiny)")
    parser.add_argument("--out", required=True, type=Path, help="run folder for checkpoints and logs")
    parser.add_argument(
        "--init",
        type=Path,
        help="spd: a caption checkpoint (its front-end) or an spd one; spgm: an spgm one (fine-tuning)",
    )
    parser.add_argument("--spd", type=Path, help="spgm, spgm-seq: the trained SPD checkpoint (kept frozen)")
    parser.add_argument(
        "--recurrent",
        action="store_true",
        help="spgm-seq: give SPGM memory across frames (ConvGRUs in its decoder, state reset at cuts); without it the "
        "same sequence training runs on the stateless SPGM (the control)",
    )
    parser.add_argument("--variant", help="spgm ablation: basic, basic+aft, spg-im-wo-aft, spg-im (default)")
    parser.add_argument(
        "--refine-stride",
        type=int,
        help="spgm: 1 or 2, run the decoder's last level on the full-size (1) or half-size (2) image; "
        "default: the configuration's (live: 2, for speed)",
    )
    parser.add_argument("--resume", type=Path, help="continue exactly from a checkpoint of this run (last.pt)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size (per process)")
    parser.add_argument(
        "--lr",
        type=float,
        help="override the maximum learning rate (caption: of the front-end; the decoder's keeps its ratio)",
    )
    parser.add_argument(
        "--milestones", type=lambda s: [int(x) for x in s.split(",")], help="step-decay epochs, e.g. 40,60,80"
    )
    parser.add_argument(
        "--schedule-preset",
        help="paper A.1 decays of a dataset: composition-1k, distinction-646, human-2k, multi-object-1k",
    )
    parser.add_argument("--bg-per-fg", type=int, help="composites per foreground per epoch (paper: 100)")
    parser.add_argument("--crop", type=int, help="training crop size (paper: 512)")
    parser.add_argument("--max-steps-per-epoch", type=int, help="cap on steps per epoch, for smoke runs")
    parser.add_argument(
        "--shift-consistency",
        type=float,
        help="spgm: weight of a term that makes the matte of a slightly moved crop the moved matte (less flicker)",
    )
    parser.add_argument(
        "--sequences", type=int, help="spgm-seq: generated sequences per epoch (distinct within a run and a seed)"
    )
    parser.add_argument(
        "--sequence-frames",
        type=int,
        help="spgm-seq: frames per generated sequence (default 12); the recurrent state runs that many frames",
    )
    parser.add_argument(
        "--steady-share",
        type=float,
        help="spgm-seq: share of sequences whose objects move at the steady speeds of `spgim data clip` (default 0)",
    )
    parser.add_argument(
        "--scenes-per-sequence",
        type=int,
        help="spgm-seq: still composites of DATA/train trained beside each sequence (0: sequences only)",
    )
    parser.add_argument(
        "--memory-lr-factor",
        type=float,
        help="spgm-seq --recurrent: the recurrent units' learning rate over the rest's (default 10: they start at 0)",
    )
    parser.add_argument(
        "--memory-only",
        action="store_true",
        default=None,
        help="spgm-seq --recurrent: train the recurrent units alone; the rest of SPGM stays as --init gave it",
    )
    parser.add_argument(
        "--train-only",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        metavar="PARTS",
        help="spgm-seq: train these parts of SPGM alone, a comma list of its module names (e.g. levels.2,recurrent); "
        "the rest stays as --init gave it",
    )
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``spgim train``."""
    import torch

    from .checkpoint import load_checkpoint
    from .distributed import setup_distributed, teardown_distributed
    from .loop import run_training
    from .recipes import get_recipe
    from .stages import CaptionStage, SPDStage, SPGMSequenceStage, SPGMStage

    if not args.data.is_dir():
        raise SpgimError(f"data folder {args.data} does not exist")
    if args.stage in ("spgm", "spgm-seq") and args.spd is None:
        raise SpgimError(f"spgim train {args.stage} needs --spd SPD_CHECKPOINT (the trained SPD, kept frozen)")
    spgm_only = (args.variant, args.shift_consistency, args.refine_stride)
    if args.stage != "spgm" and any(option is not None for option in spgm_only):
        raise SpgimError("--variant, --shift-consistency and --refine-stride belong to the spgm stage")
    if args.stage not in ("spgm", "spgm-seq") and args.spd is not None:
        raise SpgimError("--spd belongs to the spgm and spgm-seq stages")
    if args.stage == "spgm-seq" and (args.crop is not None or args.bg_per_fg is not None):
        raise SpgimError("--crop and --bg-per-fg shape image training; spgm-seq trains on generated sequences")
    sequence_options = (args.sequences, args.scenes_per_sequence, args.sequence_frames, args.steady_share)
    if args.stage != "spgm-seq" and any(option is not None for option in sequence_options):
        raise SpgimError(
            "--sequences, --sequence-frames, --steady-share and --scenes-per-sequence belong to the spgm-seq stage"
        )
    if args.sequence_frames is not None and args.sequence_frames < 2:
        raise SpgimError(f"--sequence-frames must be at least 2, got {args.sequence_frames}")
    if args.steady_share is not None and not 0.0 <= args.steady_share <= 1.0:
        raise SpgimError(f"--steady-share must be within [0, 1], got {args.steady_share}")
    if (args.memory_lr_factor is not None or args.memory_only) and not args.recurrent:
        raise SpgimError(
            "--memory-lr-factor and --memory-only belong to spgm-seq --recurrent (the control has no recurrent units)"
        )
    if args.train_only is not None and args.stage != "spgm-seq":
        raise SpgimError("--train-only belongs to the spgm-seq stage")
    if args.train_only is not None and args.memory_only:
        raise SpgimError("--memory-only trains the recurrent units alone: give it or --train-only, not both")
    if args.train_only == []:
        raise SpgimError("--train-only names no part of SPGM")
    if args.memory_lr_factor is not None and args.memory_lr_factor <= 0:
        raise SpgimError(f"--memory-lr-factor must be positive, got {args.memory_lr_factor}")
    if args.recurrent and args.stage != "spgm-seq":
        raise SpgimError("--recurrent belongs to the spgm-seq stage")
    if args.recurrent and args.resume is not None:
        raise SpgimError("--recurrent cannot change a run being resumed (its checkpoint says whether it is recurrent)")
    if args.refine_stride not in (None, 1, 2):
        raise SpgimError(f"--refine-stride must be 1 or 2, got {args.refine_stride}")
    if args.resume is not None and args.refine_stride is not None:
        raise SpgimError("--refine-stride cannot change a run being resumed")
    if args.shift_consistency is not None and args.shift_consistency < 0:
        raise SpgimError(f"--shift-consistency must be 0 or more, got {args.shift_consistency}")
    if args.stage == "caption" and args.init is not None:
        raise SpgimError("--init belongs to the spd stage (a caption or spd checkpoint) and spgm (an spgm one)")
    resume: dict[str, Any] | None = None
    if args.resume is not None:
        resume = load_checkpoint(args.resume, branch="spgm" if args.stage == "spgm-seq" else args.stage)
        if "train_state" not in resume["extra"]:
            raise SpgimError(f"{args.resume} holds no training state to resume from")
        recipe = dict(resume["extra"]["train_state"]["recipe"])
        if args.epochs is not None:
            recipe["epochs"] = args.epochs
        seed = int(resume["extra"]["train_state"]["seed"])
    else:
        recipe = get_recipe(
            args.config,
            args.stage,
            preset=args.schedule_preset,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            milestones=args.milestones,
            bg_per_fg=args.bg_per_fg if args.stage not in ("caption", "spgm-seq") else None,
            crop=args.crop if args.stage not in ("caption", "spgm-seq") else None,
            max_steps_per_epoch=args.max_steps_per_epoch,
            shift_consistency=args.shift_consistency,
            sequences_per_epoch=args.sequences,
            seq_frames=args.sequence_frames,
            steady_share=args.steady_share,
            scenes_per_sequence=args.scenes_per_sequence,
            memory_lr_factor=args.memory_lr_factor,
            memory_only=args.memory_only,
            trained_parts=args.train_only,
        )
        seed = args.seed
    torch.manual_seed(seed)
    info = setup_distributed()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        common: dict[str, Any] = {
            "data": args.data,
            "config_name": args.config,
            "recipe": recipe,
            "info": info,
            "seed": seed,
            "resume": resume,
        }
        stage: Any
        if args.stage == "caption":
            stage = CaptionStage(out_dir=args.out, **common)
        elif args.stage == "spd":
            stage = SPDStage(init=args.init, **common)
        elif args.stage == "spgm-seq":
            stage = SPGMSequenceStage(spd_path=args.spd, init=args.init, recurrent=args.recurrent, **common)
        else:
            stage = SPGMStage(
                spd_path=args.spd, variant=args.variant, init=args.init, refine_stride=args.refine_stride, **common
            )
        if resume is not None:
            stage.model.load_state_dict(resume["state_dict"])
        state = run_training(
            stage,
            out_dir=args.out,
            info=info,
            seed=seed,
            workers=args.workers,
            resume_state=resume["extra"]["train_state"] if resume else None,
        )
        if info.is_main:
            best = state["best_score"]
            print(
                f"{args.stage}: {state['epoch']} epochs done; checkpoints in {args.out} (best score {best:.4g})"
                if best is not None
                else f"{args.stage}: done; checkpoints in {args.out}"
            )
    finally:
        teardown_distributed(info)
    return 0


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``spgim eval``."""
    # Not required=True: `spgim eval --video` takes other flags; the handler says which ones are missing.
    parser.add_argument("--spd", type=Path, help="SPD checkpoint")
    parser.add_argument("--spgm", type=Path, help="SPGM checkpoint trained with that SPD")
    parser.add_argument("--data", type=Path, help="dataset folder with test/merged and test/alpha")
    parser.add_argument("--out", type=Path, help="write the metrics JSON here")
    parser.add_argument("--limit", type=int, help="evaluate only the first N test images")


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``spgim eval``."""
    import torch

    from .checkpoint import load_checkpoint, load_model, weights_digest
    from .evaluate import evaluate_split

    spgm_payload = load_checkpoint(args.spgm, branch="spgm")
    spd = load_model(args.spd, "spd", spgm_payload["config"])
    expected = spgm_payload["extra"].get("spd_digest")
    if expected is not None and expected != weights_digest(spd.state_dict()):
        raise SpgimError(f"{args.spgm} was trained with another SPD than {args.spd}")
    spgm = load_model(args.spgm, "spgm")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate_split(spd, spgm, args.data, device=device, limit=args.limit)
    result["checkpoints"] = {"spd": str(args.spd), "spgm": str(args.spgm)}
    print(format_metrics(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


def format_metrics(result: dict[str, Any]) -> str:
    """Table 4-style lines: SAD, MSE, Grad, Conn for all, single- and multi-object images."""
    lines = []
    for region in ("whole_image", "unknown_region"):
        groups = result.get(region)
        if not groups:
            continue
        lines.append(f"{region.replace('_', ' ')}:  {'images':>6} {'SAD':>8} {'MSE':>8} {'Grad':>8} {'Conn':>8}")
        for group in ("all", "single", "multi"):
            numbers = groups[group]
            if not numbers["count"]:
                lines.append(f"  {group:<12} {0:>6}")
                continue
            lines.append(
                f"  {group:<12} {numbers['count']:>6} {numbers['sad']:>8.3f} {numbers['mse']:>8.4f} "
                f"{numbers['grad']:>8.3f} {numbers['conn']:>8.3f}"
            )
    return "\n".join(lines)
