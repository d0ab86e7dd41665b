"""Store a reference run's SPD and SPGM in spgim/weights (fp16, digests in weights/<config>.json).

    .venv/bin/python scripts/ship_reference.py --run runs/reference-live [--evaluation EVAL.json]

The SPGM's record of its SPD is updated to the fp16 SPD, so ``spgim export`` accepts the pair.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from spgim.reference import WEIGHTS, manifest_path
from spgim.train.checkpoint import load_checkpoint, load_model, save_checkpoint, weights_digest

NOTE = (
    "trained on spgim's generated scenes only (coloured shapes over photos and textures): "
    "a starting point for fine-tuning and for the demo, not a model of people or real objects"
)


def _half(model: torch.nn.Module) -> torch.nn.Module:
    return model.half()  # floating tensors only; BatchNorm's counters stay integers


def _ship(source: Path, target: Path, payload: dict, extra: dict) -> None:
    """The checkpoint at ``source`` saved to ``target`` in fp16, with ``extra`` and the note."""
    branch = payload["branch"]
    model = _half(load_model(source, branch))
    save_checkpoint(target, branch=branch, config=payload["config"], model=model, extra={**extra, "note": NOTE})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the folder scripts/train_reference.sh wrote")
    parser.add_argument("--evaluation", type=Path, help="a JSON of the run's evaluation to keep in the manifest")
    parser.add_argument(
        "--command",
        default="scripts/train_reference.sh {config} RUN",
        help="how the run was made, recorded in the manifest ({config} is filled in)",
    )
    args = parser.parse_args()
    WEIGHTS.mkdir(exist_ok=True)
    spd_source, spgm_source = args.run / "spd" / "best.pt", args.run / "spgm" / "best.pt"
    spd_payload, spgm_payload = load_checkpoint(spd_source, branch="spd"), load_checkpoint(spgm_source, branch="spgm")
    config = spd_payload["config"]["name"]
    spd_path, spgm_path = WEIGHTS / f"{config}-spd.pt", WEIGHTS / f"{config}-spgm.pt"
    _ship(spd_source, spd_path, spd_payload, {"mask_sigma": spd_payload["extra"].get("mask_sigma")})
    # The digest SPGM keeps of its SPD is taken as `spgim export` takes it: on the loaded (fp32) model.
    spd_digest = weights_digest(load_model(spd_path, "spd").state_dict())
    _ship(spgm_source, spgm_path, spgm_payload, {"spd_digest": spd_digest})
    manifest = {
        "config": config,
        "command": args.command.format(config=config) + " && .venv/bin/python scripts/ship_reference.py --run RUN",
        "note": NOTE,
        "branches": {
            branch: {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
            for branch, path in (("spd", spd_path), ("spgm", spgm_path))
        },
        "training": {
            stage: load_checkpoint(args.run / stage / "best.pt")["extra"]["train_state"]["recipe"]
            for stage in ("spd", "spgm")
        },
    }
    if args.evaluation is not None:
        manifest["evaluation"] = json.loads(args.evaluation.read_text())
    manifest_path(config).write_text(json.dumps(manifest, indent=1) + "\n")
    print(
        f"wrote {spd_path} ({spd_path.stat().st_size / 1e6:.1f} MB), {spgm_path} "
        f"({spgm_path.stat().st_size / 1e6:.1f} MB), {manifest_path(config)}"
    )


if __name__ == "__main__":
    main()
