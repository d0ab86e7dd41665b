"""The training stages: caption pre-training, SPD (saliency mask), SPGM (alpha), and SPGM on sequences.

Each stage builds its model, data, parameter groups, loss and validation score for
:func:`spgim.train.loop.run_training`; the command ``spgim train caption|spd|spgm|spgm-seq`` picks one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spgim.errors import SpgimError

from .checkpoint import load_checkpoint, load_model, weights_digest
from .config import LIVE_RECURRENT, config_differences, get_config, stream_defaults
from .data.captions import CaptionTokenizer, CocoCaptionsDataset, load_coco_captions, train_tokenizer
from .data.matting import MattingTestDataset, MattingTrainDataset
from .data.sequences import SequenceDataset, SequencesWithScenes
from .distributed import DistInfo, barrier
from .evaluate import validation_sad
from .models import SPD, SPGM, CaptionModel, guide_channels, saliency_target


def load_branch_weights(
    model: nn.Module, payload: dict[str, Any], config: dict[str, Any], branch: str, path: Path
) -> None:
    """Start ``model`` from a checkpoint of the same branch and configuration (fine-tuning).

    SPGM's ``refine_stride`` may differ: it says where the last decoder level runs, not what its
    weights are, so a checkpoint trained at one stride starts a fine-tune at the other. A stateless SPGM starts a
    recurrent one: its recurrent units keep their zero start, so it begins as the stateless model.
    """
    wanted, started = config[branch], payload["config"][branch]
    if branch == "spgm":
        wanted = {key: value for key, value in wanted.items() if key not in ("refine_stride", "recurrent")}
        started = {key: value for key, value in started.items() if key not in ("refine_stride", "recurrent")}
    differences = config_differences(wanted, started, branch)
    if differences:
        raise SpgimError(f"--init {path} was made for another configuration: {differences[0]}")
    if branch == "spgm" and config[branch].get("recurrent") and not payload["config"][branch].get("recurrent"):
        # A recurrent SPGM started from a stateless one: its recurrent units keep their zero start.
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
        if unexpected or any(not key.startswith("recurrent.") for key in missing):
            raise SpgimError(f"--init {path} does not hold this SPGM's weights: {(unexpected or missing)[0]}")
        return
    model.load_state_dict(payload["state_dict"])


def alpha_loss(alphas: tuple[Tensor, ...], target: Tensor, weights: list[float]) -> Tensor:
    """Eq. 6: sum_i lambda_i |a_i - a*|_1 over the decoder's alphas (brought to the target's size)."""
    total = target.new_zeros(())
    for weight, alpha in zip(weights, alphas, strict=True):
        if alpha.shape[-2:] != target.shape[-2:]:
            alpha = F.interpolate(alpha, size=target.shape[-2:], mode="bilinear", align_corners=False)
        total = total + weight * F.l1_loss(alpha, target)
    return total


def frozen_spd(
    spd_path: Path, config: dict[str, Any], info: DistInfo, resume: dict[str, Any] | None
) -> tuple[nn.Module, str, float]:
    """The trained SPD an SPGM stage reads, frozen on ``info.device``: ``(model, weights digest, guide sigma)``.

    Refused in one line: an SPD of another configuration, or, resuming, another SPD than the run's. The guide
    sigma is the blur of SPD's training target: a stream's guide between keyframes, S(previous alpha), is
    blurred alike.
    """
    payload = load_checkpoint(spd_path, branch="spd")
    differences = config_differences(config["spd"], payload["config"]["spd"], "spd")
    if differences:
        raise SpgimError(f"SPD checkpoint {spd_path} was made for another configuration: {differences[0]}")
    spd = load_model(spd_path, "spd").eval().to(info.device)
    spd.requires_grad_(False)
    digest = weights_digest(spd.state_dict())
    if resume is not None and resume["extra"].get("spd_digest") != digest:
        raise SpgimError(f"{spd_path} is not the SPD this SPGM run was trained with")
    return spd, digest, float(payload.get("extra", {}).get("mask_sigma") or 1.0)


class CaptionStage:
    """Visual-to-textual pre-training of SPD's front-end on COCO Captions (paper §3.1, A.2)."""

    branch = "caption"

    def __init__(
        self,
        *,
        data: Path,
        config_name: str,
        recipe: dict[str, Any],
        out_dir: Path,
        info: DistInfo,
        seed: int,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.recipe, self.info, self.data = recipe, info, data
        tokenizer_path = out_dir / "tokenizer.model"
        if info.is_main:
            if resume is not None:
                tokenizer_path.write_bytes(resume["extra"]["tokenizer"].numpy().tobytes())
            else:
                base = get_config(config_name)["caption"]
                captions = [caption for _, caption in load_coco_captions(data, "train")]
                train_tokenizer(captions, tokenizer_path.with_suffix(""), base["vocab_size"])
        barrier(info)
        self.tokenizer = CaptionTokenizer(tokenizer_path)
        self.config = (
            resume["config"] if resume else get_config(config_name, caption__vocab_size=self.tokenizer.vocab_size)
        )
        self.model = CaptionModel(self.config)
        caption = self.config["caption"]
        self.train_set = CocoCaptionsDataset(
            data,
            "train",
            image_size=caption["image_size"],
            tokenizer=self.tokenizer,
            max_len=caption["max_len"],
            seed=seed,
        )
        self.val_set: CocoCaptionsDataset | None = None
        if (data / "coco" / "annotations" / "captions_val2017.json").is_file() or (
            data / "annotations" / "captions_val2017.json"
        ).is_file():
            self.val_set = CocoCaptionsDataset(
                data,
                "val",
                image_size=caption["image_size"],
                tokenizer=self.tokenizer,
                max_len=caption["max_len"],
            )

    def param_groups(self) -> list[dict[str, Any]]:
        backbone = list(self.model.backbone.parameters())
        head = list(self.model.head.parameters())
        return [
            {"params": backbone, "lr": self.recipe["lr"]["backbone"]},
            {"params": head, "lr": self.recipe["lr"]["head"]},
        ]

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        loss: Tensor = model(batch["image"], batch["tokens"])
        return loss

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val_set is None:
            return {}
        self.model.eval()
        loader = torch.utils.data.DataLoader(self.val_set, batch_size=self.recipe["batch_size"])
        total, count = 0.0, 0
        for batch in loader:
            image, tokens = batch["image"].to(self.info.device), batch["tokens"].to(self.info.device)
            total += float(self.model(image, tokens)) * len(image)
            count += len(image)
        return {"val_loss": total / count, "score": total / count}

    def checkpoint_extra(self) -> dict[str, Any]:
        data = np.frombuffer(self.tokenizer.model_path.read_bytes(), dtype=np.uint8).copy()
        return {"tokenizer": torch.from_numpy(data)}


class SPDStage:
    """Saliency-mask training of SPD against S(a*) with an L2 loss (Eq. 2), from the caption front-end."""

    branch = "spd"

    def __init__(
        self,
        *,
        data: Path,
        config_name: str,
        recipe: dict[str, Any],
        info: DistInfo,
        seed: int,
        init: Path | None = None,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.recipe, self.info = recipe, info
        self.config = resume["config"] if resume else get_config(config_name)
        self.model = SPD(self.config["spd"])
        self.init = str(init) if init else None
        if resume is None and init is not None:
            self._load_init(init)
        self.train_set = MattingTrainDataset(
            data,
            size=recipe["crop"],
            bg_per_fg=recipe["bg_per_fg"],
            seed=seed,
            mask_sigma=recipe["mask_sigma"],
        )
        self.val_set = MattingTestDataset(data, size=recipe["crop"]) if (data / "test").is_dir() else None

    def _load_init(self, path: Path) -> None:
        """A caption checkpoint gives the front-end; an SPD checkpoint the whole branch (fine-tuning)."""
        payload = load_checkpoint(path)
        if payload["branch"] == "spd":
            load_branch_weights(self.model, payload, self.config, "spd", path)
            return
        if payload["branch"] != "caption":
            raise SpgimError(f"--init {path} holds a {payload['branch']} branch; spd starts from a caption or spd one")
        differences = config_differences(self.config["spd"], payload["config"]["spd"], "spd")
        if differences:
            raise SpgimError(f"caption checkpoint {path} has another front-end: {differences[0]}")
        prefix = "backbone."
        weights = {k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)}
        self.model.backbone.load_state_dict(weights)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters()), "lr": self.recipe["lr"]}]

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        mask = model(batch["image"])[0]
        return F.mse_loss(mask, batch["mask_target"])

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val_set is None:
            return {}
        self.model.eval()
        total = 0.0
        for index in range(len(self.val_set)):
            item = self.val_set[index]
            mask = self.model(item["image"][None].to(self.info.device))[0]
            target = saliency_target(item["alpha"][None].to(mask.device), mask.shape[-2:], self.recipe["mask_sigma"])
            total += float(F.mse_loss(mask, target))
        mean = total / max(1, len(self.val_set))
        return {"val_loss": mean, "score": mean}

    def checkpoint_extra(self) -> dict[str, Any]:
        # The blur of SPD's target: a stream's guide made from the previous alpha is blurred alike.
        return {"init": self.init, "mask_sigma": self.recipe["mask_sigma"]}


class SceneLoss:
    """Eq. 6 on still composites as the SPGM stage trains it, for any SPGM stage that trains on scenes.

    With the recipe's ``propagated_guide`` share, some guides are S(the truth moved a little), as a stream's guide
    between keyframes is; with ``shift_consistency``, each crop is also moved as one frame of a stream moves to the
    next and the matte must move with it. A recurrent SPGM sees each composite as a stream's first frame (zero
    state) and its returned state is dropped.

    Args:
        spd: the frozen SPD whose mask and features guide SPGM.
        guide_sigma: the blur of SPD's training target (a propagated guide is blurred alike).
        recipe: the stage's recipe (``loss_weights``, ``propagated_guide``, ``shift_consistency``).
        seed: the run's seed; the guides' and the motions' random numbers follow from it.
    """

    def __init__(self, spd: nn.Module, guide_sigma: float, recipe: dict[str, Any], seed: int) -> None:
        self.spd, self.guide_sigma, self.recipe = spd, guide_sigma, recipe
        self.guide_generator = torch.Generator().manual_seed(seed)
        self.motion_generator = torch.Generator().manual_seed(seed + 1)

    def __call__(self, model: nn.Module, image: Tensor, target: Tensor) -> Tensor:
        """The loss of ``model`` on composites ``image`` ``(B, 3, H, W)`` with true alpha ``target``."""
        alphas = self._alphas(model, image, target)
        total = alpha_loss(alphas, target, self.recipe["loss_weights"])
        consistency = float(self.recipe.get("shift_consistency", 0.0))  # absent from runs made before it
        if consistency > 0 and model.training:
            grid, valid = self._small_motion(image)
            moved_image, moved_target = _warp(image, grid), _warp(target, grid)
            moved_alphas = self._alphas(model, moved_image, moved_target)
            total = total + alpha_loss(moved_alphas, moved_target, self.recipe["loss_weights"])
            # dtSSD's term, (a' - T(a)) - (g' - T(g)), where g' = T(g): the matte must move as the picture does.
            drift = (moved_alphas[-1] - _warp(alphas[-1], grid)).abs() * valid
            total = total + consistency * drift.sum() / valid.sum().clamp_min(1.0)
        return total

    def _alphas(self, model: nn.Module, image: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        """The decoder's alphas for ``image`` (a recurrent model's new state left out)."""
        outputs = model(image, *self._guides(model, image, target))
        outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
        inner: Any = getattr(model, "module", model)  # model may be DDP-wrapped
        return outputs[: len(outputs) - len(inner.recurrent)]

    def _guides(self, model: nn.Module, image: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        """SPD's (frozen) mask and features for ``image``; in training some masks are propagated guides."""
        with torch.no_grad():
            mask, r2, r3, r4 = self.spd(image)
            share = float(self.recipe.get("propagated_guide", 0.0))  # absent from runs made before it
            if share > 0 and model.training:
                mask = self._mix_propagated_guides(mask, target, share)
        return mask, r2, r3, r4

    def _small_motion(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """A sampling grid moving each crop as one frame of a stream moves to the next, and where it is valid.

        Up to 4 px of shift (sub-pixel included: where a CNN's strides make a matte flicker), 3 degrees of
        turn and 3 % of scale; ``valid`` is 1 where the moved crop shows the original (not its border).
        """
        batch, _, height, width = image.shape
        generator = self.motion_generator
        angle = (torch.rand(batch, generator=generator) - 0.5) * (2 * np.pi * 6 / 360)
        scale = 1.0 + (torch.rand(batch, generator=generator) - 0.5) * 0.06
        pixels = (torch.rand(batch, 2, generator=generator) - 0.5) * 8.0
        shift = pixels * 2.0 / torch.tensor([width, height], dtype=torch.float32)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(image), [batch, 1, height, width], align_corners=False)
        valid = (grid.abs() <= 1.0).all(dim=-1, keepdim=True).permute(0, 3, 1, 2).to(image)
        return grid, valid

    def _mix_propagated_guides(self, mask: Tensor, alpha: Tensor, share: float) -> Tensor:
        """Replace the guide of about ``share`` of the samples by S(the truth, moved a little).

        Between keyframes a stream guides SPGM with S(previous frame's alpha): right in shape,
        a few pixels off where the object moved, turned or grew. Trained only on SPD's masks, SPGM
        would never have seen such a guide (nor learned to correct its offset).
        """
        batch = alpha.shape[0]
        generator = self.guide_generator
        chosen = torch.rand(batch, generator=generator) < share
        if not bool(chosen.any()):
            return mask
        angle = (torch.rand(batch, generator=generator) - 0.5) * (2 * np.pi * 8 / 360)  # up to 4 degrees
        scale = 1.0 + (torch.rand(batch, generator=generator) - 0.5) * 0.1  # up to 5 % smaller or larger
        shift = (torch.rand(batch, 2, generator=generator) - 0.5) * 0.08  # up to 2 % of the side each way
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(alpha), list(alpha.shape), align_corners=False)
        moved = F.grid_sample(alpha, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        propagated = saliency_target(moved, (mask.shape[-2], mask.shape[-1]), self.guide_sigma)
        return torch.where(chosen.to(mask.device).view(-1, 1, 1, 1), propagated, mask)


class SPGMStage:
    """Alpha training of SPGM guided by a frozen SPD; loss sum_i lambda_i |a_i - a*|_1 (Eq. 6)."""

    branch = "spgm"

    def __init__(
        self,
        *,
        data: Path,
        config_name: str,
        recipe: dict[str, Any],
        info: DistInfo,
        seed: int,
        spd_path: Path,
        variant: str | None = None,
        init: Path | None = None,
        refine_stride: int | None = None,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.recipe, self.info = recipe, info
        self.config = resume["config"] if resume else get_config(config_name, variant=variant)
        if refine_stride is not None:
            self.config["spgm"]["refine_stride"] = refine_stride
        self.spd, self.spd_digest, guide_sigma = frozen_spd(spd_path, self.config, info, resume)
        self.spd_path = str(spd_path)
        self.scene_loss = SceneLoss(self.spd, guide_sigma, recipe, seed)
        self.model = SPGM(self.config["spgm"], guide_channels(self.config))
        self.init = str(init) if init else None
        if resume is None and init is not None:
            load_branch_weights(self.model, load_checkpoint(init, branch="spgm"), self.config, "spgm", init)
        self.train_set = MattingTrainDataset(data, size=recipe["crop"], bg_per_fg=recipe["bg_per_fg"], seed=seed)
        self.val_set = MattingTestDataset(data) if (data / "test").is_dir() else None

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters()), "lr": self.recipe["lr"]}]

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return self.scene_loss(model, batch["image"], batch["alpha"])

    def validate(self) -> dict[str, float]:
        if self.val_set is None:
            return {}
        self.model.eval()
        sad = validation_sad(self.spd, self.model, self.val_set, self.info.device)
        return {"val_sad": sad, "score": sad}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"spd_digest": self.spd_digest, "spd_checkpoint": self.spd_path, "init": self.init}


def hold_batch_norm_statistics(model: nn.Module) -> None:
    """Put ``model``'s BatchNorm layers in eval mode: they normalise with their running statistics and no longer
    update them, while the rest of ``model`` keeps its mode and every parameter still learns."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _warp(image: Tensor, grid: Tensor) -> Tensor:
    """``image`` resampled at ``grid`` (bilinear; outside the image, its border)."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def trained_parts(recipe: dict[str, Any]) -> list[str] | None:
    """The SPGM parts a sequence recipe trains (module names), or None for all of them: its ``trained_parts``, or
    the recurrent units with ``memory_only``. Both are absent from runs made before them."""
    if recipe.get("trained_parts"):
        return list(recipe["trained_parts"])
    return ["recurrent"] if recipe.get("memory_only") else None


def _within(parameter: str, part: str) -> bool:
    """Whether the parameter named ``parameter`` belongs to the module named ``part``."""
    return parameter == part or parameter.startswith(part + ".")


class SPGMSequenceStage:
    """SPGM fine-tuned on generated sequences, closed-loop, exactly as a stream runs it.

    Per sequence, SPD (frozen) runs on keyframes only: the first frame, every ``keyframe_interval`` frames after
    the last keyframe, and the first frame after a hard cut. Between keyframes SPGM reads the keyframe's cached
    features with S(its own previous alpha) as the guide, as :class:`spgim.runtime.keyframes.KeyframeScheduler`
    does. A recurrent SPGM (``recurrent``) carries its state from frame to frame, from zeros at the start and
    after a cut. The loss is Eq. 6 on every frame plus ``temporal`` x MSE(the predicted alpha's change from the
    previous frame, the true alpha's change), the term RobustVideoMatting trains with; it is not taken across a
    cut. The same stage without ``recurrent`` is the control arm: same data, steps and seeds, no memory.

    With the recipe's ``scenes_per_sequence`` (and ``scene_weight``), every step also trains on that many still
    composites of ``DATA/train`` per sequence, with the image stage's loss (:class:`SceneLoss`: Eq. 6, propagated
    guides, shift consistency), so that the few generated clips do not make the model forget the varied scenes.
    """

    branch = "spgm"

    def __init__(
        self,
        *,
        data: Path,
        config_name: str,
        recipe: dict[str, Any],
        info: DistInfo,
        seed: int,
        spd_path: Path,
        init: Path | None = None,
        recurrent: bool = False,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self.recipe, self.info = recipe, info
        self.config = resume["config"] if resume else get_config(config_name)
        if resume is None and recurrent:
            self.config["spgm"]["recurrent"] = dict(LIVE_RECURRENT)
        self.spd, self.spd_digest, self.guide_sigma = frozen_spd(spd_path, self.config, info, resume)
        self.spd_path = str(spd_path)
        self.scene_loss = SceneLoss(self.spd, self.guide_sigma, recipe, seed)
        given = recipe.get("keyframe_interval")
        self.keyframe_interval = int(given) if given is not None else stream_defaults(self.config).keyframe_interval
        self.model = SPGM(self.config["spgm"], guide_channels(self.config))
        self.init = str(init) if init else None
        if resume is None and init is not None:
            load_branch_weights(self.model, load_checkpoint(init, branch="spgm"), self.config, "spgm", init)
        parts = trained_parts(recipe)
        if parts is not None:
            names = [name for name, _ in self.model.named_parameters()]
            unknown = [part for part in parts if not any(_within(name, part) for name in names)]
            if unknown:
                top = sorted({name.split(".")[0] for name in names})
                raise SpgimError(
                    f"SPGM has no part {', '.join(unknown)} to train; its parts are {', '.join(top)} (and their "
                    "children, e.g. levels.2)"
                )
            for name, parameter in self.model.named_parameters():
                parameter.requires_grad_(any(_within(name, part) for part in parts))
        size = (int(recipe["seq_size"][0]), int(recipe["seq_size"][1]))
        frames = int(recipe["seq_frames"])
        supersample = int(recipe["seq_supersample"])
        sequences = SequenceDataset(
            recipe["sequences_per_epoch"],
            frames=frames,
            size=size,
            seed=seed,
            cut_share=recipe["cut_share"],
            supersample=supersample,
            steady_share=float(recipe.get("steady_share", 0.0)),  # absent from runs made before it
        )
        self.train_set: SequenceDataset | SequencesWithScenes = sequences
        scenes = int(recipe.get("scenes_per_sequence") or 0)  # absent from runs made before it
        if scenes > 0:
            if not (data / "train").is_dir():
                raise SpgimError(f"scenes_per_sequence trains on the scenes of {data}/train, which does not exist")
            composites = MattingTrainDataset(
                data, size=recipe["scene_crop"], bg_per_fg=recipe["scene_bg_per_fg"], seed=seed
            )
            self.train_set = SequencesWithScenes(sequences, composites, scenes)
        # Held out: drawn from a seed no training run uses (training seeds are the runs' --seed, 0 and up).
        self.val_set = SequenceDataset(
            recipe["val_sequences"], frames=frames, size=size, seed=-1, cut_share=0.25, supersample=supersample
        )
        self.val_images = MattingTestDataset(data) if (data / "test").is_dir() else None

    def param_groups(self) -> list[dict[str, Any]]:
        """The trained SPGM at the recipe's rate; the recurrent units, new, at ``memory_lr_factor`` times it (they
        start at zero and reach the loss only through their zero-initialised residuals). With the recipe's
        ``memory_only`` the recurrent units alone learn, with ``trained_parts`` those parts alone: the rest of SPGM
        stays as initialised (no gradient; frozen in ``__init__``)."""
        trained = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        memory = [p for name, p in trained if name.startswith("recurrent.")]
        rest = [p for name, p in trained if not name.startswith("recurrent.")]
        memory_rate = self.recipe["lr"] * float(self.recipe["memory_lr_factor"])
        groups = [{"params": rest, "lr": self.recipe["lr"]}] if rest else []
        if memory:
            groups.append({"params": memory, "lr": memory_rate})
        return groups

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        if model.training and self.recipe["frozen_batch_norm"]:
            # Two sequences' frames make a batch of one scene each, far from the statistics of the data the SPGM
            # was trained on: its BatchNorm layers keep their running statistics (their scales still learn).
            hold_batch_norm_statistics(model)
        frame_loss, temporal, _ = self._closed_loop(model, batch)
        total = frame_loss + float(self.recipe["temporal"]) * temporal
        if "scene_image" in batch:
            image, target = batch["scene_image"].flatten(0, 1), batch["scene_alpha"].flatten(0, 1)
            total = total + float(self.recipe["scene_weight"]) * self.scene_loss(model, image, target)
        return total

    def _closed_loop(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Run the sequences of ``batch`` as a stream would; returns (mean Eq. 6 loss, mean temporal MSE, the
        final alpha of each frame, detached).

        SPD every ``keyframe_interval`` frames (the recipe's, or the configuration's stream default; 0 is every
        frame)."""
        images, targets, cuts = batch["image"], batch["alpha"], batch["cut"]
        count, length = images.shape[:2]
        interval = max(1, self.keyframe_interval)
        since_keyframe = torch.zeros(count, dtype=torch.int64, device=images.device)
        cached: tuple[Tensor, ...] | None = None
        previous_alpha: Tensor | None = None
        state: list[Tensor] = []
        inner: Any = getattr(model, "module", model)  # model may be DDP-wrapped
        states = len(inner.recurrent)
        previous_prediction: Tensor | None = None
        predictions: list[Tensor] = []
        frame_total = images.new_zeros(())
        temporal_total = images.new_zeros(())
        temporal_frames = images.new_zeros(())
        for index in range(length):
            image, target = images[:, index], targets[:, index]
            cut = (cuts == index) & (cuts > 0)
            fresh = (since_keyframe >= interval) | cut | (index == 0)
            with torch.no_grad():
                if cached is None or bool(fresh.any()):
                    features = tuple(self.spd(image))
                    if cached is None:
                        cached = features
                    else:
                        pick = fresh.view(-1, 1, 1, 1)
                        cached = tuple(torch.where(pick, new, old) for new, old in zip(features, cached, strict=True))
                mask = cached[0]
                if previous_alpha is not None:
                    guide = saliency_target(previous_alpha, (mask.shape[-2], mask.shape[-1]), self.guide_sigma)
                    mask = torch.where(fresh.view(-1, 1, 1, 1), mask, guide)
            since_keyframe = torch.where(fresh, torch.ones_like(since_keyframe), since_keyframe + 1)
            if state:
                keep = (~cut).to(image.dtype).view(-1, 1, 1, 1)
                state = [s * keep for s in state]  # zeros after a cut, as at a stream's start
            outputs = model(image, mask, *cached[1:], *state)
            outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
            split = len(outputs) - states
            alphas, state = outputs[:split], list(outputs[split:])
            alpha = alphas[-1]
            frame_total = frame_total + self._alpha_loss(alphas if model.training else (alpha,), target)
            if previous_prediction is not None:
                valid = (~cut).to(image.dtype).view(-1, 1, 1, 1)
                change = (alpha - previous_prediction) - (target - targets[:, index - 1])
                temporal_total = temporal_total + (change.pow(2) * valid).mean(dim=(1, 2, 3)).sum()
                temporal_frames = temporal_frames + valid.sum()
            previous_prediction = alpha
            previous_alpha = alpha.detach().clamp(0.0, 1.0)
            predictions.append(previous_alpha)
        return frame_total / length, temporal_total / temporal_frames.clamp_min(1.0), predictions

    def _alpha_loss(self, alphas: tuple[Tensor, ...], target: Tensor) -> Tensor:
        """Eq. 6 over the decoder's alphas in training; the final alpha's L1 alone in validation."""
        return alpha_loss(alphas, target, self.recipe["loss_weights"] if len(alphas) > 1 else [1.0])

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """On held-out sequences, run as in training: the mean per-frame MAE and temporal MSE; their sum (the
        temporal term weighted as in the loss) is the score."""
        self.model.eval()
        maes: list[float] = []
        temporals: list[float] = []
        for index in range(len(self.val_set)):
            sample = self.val_set[index]
            batch = {key: value.unsqueeze(0).to(self.info.device) for key, value in sample.items()}
            frame_error, change_error, _ = self._closed_loop(self.model, batch)
            maes.append(float(frame_error))
            temporals.append(float(change_error))
        mae, temporal = float(np.mean(maes)), float(np.mean(temporals))
        numbers: dict[str, float] = {
            "val_mae": mae,
            "val_temporal_mse": temporal,
            "score": mae + float(self.recipe["temporal"]) * temporal,
        }
        if self.val_images is not None:
            numbers["val_sad"] = validation_sad(self.spd, self.model, self.val_images, self.info.device)
        return numbers

    def checkpoint_extra(self) -> dict[str, Any]:
        return {
            "spd_digest": self.spd_digest,
            "spd_checkpoint": self.spd_path,
            "init": self.init,
            "sequences": self.train_set.describe(),
        }
