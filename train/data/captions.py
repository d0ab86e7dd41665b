"""COCO Captions for pre-training SPD's front-end by captioning (VirTex), and its tokenizer.

The tokenizer is a SentencePiece unigram model with VirTex's conventions: case-folded text, and
the ids the caption head expects (pad 0, SOS 1, EOS 2, unknown 3). A caption is encoded as
``[SOS, w1 .. wn, EOS]`` and padded with pad ids to a fixed length.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from spgim.errors import SpgimError

from .images import jitter_colour, limit_cv2_threads_in_worker, read_rgb, resize, to_tensor

PAD_ID, SOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def _sentencepiece() -> Any:
    try:
        import sentencepiece
    except ImportError:
        raise SpgimError("captioning needs sentencepiece: pip install sentencepiece") from None
    return sentencepiece


def train_tokenizer(captions: Iterable[str], model_prefix: Path, vocab_size: int) -> Path:
    """Train a SentencePiece unigram tokenizer on captions; returns the ``.model`` file.

    A corpus too small for ``vocab_size`` pieces gets as many as it supports (SentencePiece's
    soft vocabulary limit), so check :attr:`CaptionTokenizer.vocab_size` against the model's.

    Args:
        captions: the training captions.
        model_prefix: writes ``<model_prefix>.model`` and ``<model_prefix>.vocab``.
        vocab_size: the largest vocabulary wanted, special ids included.
    """
    lines = [" ".join(c.split()) for c in captions]
    lines = [line for line in lines if line]
    if not lines:
        raise SpgimError("cannot train a tokenizer on no captions")
    model_prefix = Path(model_prefix)
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        _sentencepiece().SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=str(model_prefix),
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            model_type="unigram",
            normalization_rule_name="nmt_nfkc_cf",
            character_coverage=0.9995,
            pad_id=PAD_ID,
            bos_id=SOS_ID,
            eos_id=EOS_ID,
            unk_id=UNK_ID,
            minloglevel=2,
        )
    except RuntimeError as exc:
        match = re.search(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)", str(exc))
        if match:
            raise SpgimError(
                f"tokenizer vocab_size {vocab_size} is too small: the captions need at least "
                f"{match.group(1)} pieces for their characters and special ids"
            ) from None
        raise SpgimError(f"SentencePiece failed: {str(exc).splitlines()[0]}") from None
    return model_prefix.with_name(model_prefix.name + ".model")


class CaptionTokenizer:
    """A trained SentencePiece model with the caption head's special ids."""

    def __init__(self, model_path: str | Path) -> None:
        self.model_path = Path(model_path)
        try:
            self.processor = _sentencepiece().SentencePieceProcessor(model_file=str(self.model_path))
        except (OSError, RuntimeError):
            raise SpgimError(
                f"cannot load tokenizer {self.model_path} (missing or not a SentencePiece model)"
            ) from None
        found = (self.processor.pad_id(), self.processor.bos_id(), self.processor.eos_id())
        if found != (PAD_ID, SOS_ID, EOS_ID):
            raise SpgimError(
                f"tokenizer {self.model_path} has pad/SOS/EOS ids {found}, expected "
                f"{(PAD_ID, SOS_ID, EOS_ID)}; train it with train_tokenizer"
            )
        self.pad_id, self.sos_id, self.eos_id = PAD_ID, SOS_ID, EOS_ID

    @property
    def vocab_size(self) -> int:
        """Number of ids, special ids included."""
        return int(self.processor.get_piece_size())

    def encode(self, text: str, max_len: int) -> list[int]:
        """``[SOS, w1 .. wn, EOS]``, at most ``max_len`` ids long: long captions lose their tail
        but keep EOS."""
        if max_len < 2:
            raise SpgimError(f"max_len {max_len} leaves no room for SOS and EOS")
        ids = [int(i) for i in self.processor.encode(text)]
        return [self.sos_id, *ids[: max_len - 2], self.eos_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; special ids are skipped and decoding stops at the first EOS."""
        pieces = []
        for token in ids:
            if token == self.eos_id:
                break
            if token not in (self.pad_id, self.sos_id):
                pieces.append(int(token))
        return str(self.processor.decode(pieces))


_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def swap_left_right(caption: str) -> str:
    """Swap the words "left" and "right" (whole words, keeping their case) for a flipped image."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        if word.isupper():
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return _LEFT_RIGHT.sub(swap, caption)


def _coco_dir(root: Path) -> Path:
    return root if (root / "annotations").is_dir() else root / "coco"


def load_coco_captions(root: str | Path, split: str) -> list[tuple[Path, str]]:
    """``(image file, caption)`` for every caption annotation of a COCO Captions split.

    Args:
        root: DATA (holding ``coco/``) or the ``coco`` folder itself.
        split: ``"train"`` or ``"val"``: reads ``annotations/captions_{split}2017.json``.

    Raises SpgimError naming the file if the JSON is missing or malformed, or an annotated image
    is missing from ``{split}2017/``.
    """
    coco = _coco_dir(Path(root))
    path = coco / "annotations" / f"captions_{split}2017.json"
    if not path.is_file():
        raise SpgimError(f"missing COCO Captions file {path} (see docs/data-layout.md)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpgimError(f"cannot read {path} ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
        raise SpgimError(f"{path} is not COCO Captions JSON: it needs 'images' and 'annotations' lists")
    image_dir = coco / f"{split}2017"
    try:
        files = {image["id"]: image_dir / image["file_name"] for image in data["images"]}
        items = [(annotation["image_id"], str(annotation["caption"])) for annotation in data["annotations"]]
    except (KeyError, TypeError) as exc:
        raise SpgimError(
            f"{path} has an image without id/file_name or an annotation without image_id/caption ({exc})"
        ) from None
    out = []
    checked: set[Path] = set()
    for image_id, caption in items:
        if image_id not in files:
            raise SpgimError(f"{path} has a caption for image id {image_id}, which is not among its images")
        file = files[image_id]
        if file not in checked:
            if not file.is_file():
                raise SpgimError(f"missing image {file}, captioned in {path}")
            checked.add(file)
        out.append((file, caption))
    if not out:
        raise SpgimError(f"{path} has no captions")
    return out


def _random_resized_crop(
    image: NDArray[np.uint8], size: int, rng: np.random.Generator, scale: tuple[float, float] = (0.2, 1.0)
) -> NDArray[np.uint8]:
    """torchvision's RandomResizedCrop (aspect 3/4 to 4/3), as VirTex trains with."""
    h, w = image.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            return resize(np.ascontiguousarray(image[top : top + ch, left : left + cw]), size, size)
    return _centre_crop(image, size, size)


def _centre_crop(image: NDArray[np.uint8], size: int, shorter: int) -> NDArray[np.uint8]:
    """Resize the shorter side to ``shorter``, then take the central ``size`` square."""
    h, w = image.shape[:2]
    factor = shorter / min(h, w)
    nh, nw = max(size, round(h * factor)), max(size, round(w * factor))
    image = resize(image, nw, nh)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(image[top : top + size, left : left + size])


class CocoCaptionsDataset(Dataset[dict[str, Tensor]]):
    """One item per COCO caption: ``{"image": (3, S, S) float32 in [0, 1], "tokens": (max_len + 1,)}``.

    Tokens are ``[SOS, w1 .. wn, EOS, PAD ..]``: ``max_len + 1`` ids, so the caption head's
    teacher-forced input ``tokens[:-1]`` fills its ``max_len`` positions. Training images get
    VirTex's augmentation (random resized crop, colour jitter, horizontal flip that swaps "left"
    and "right" in the caption), a function of ``(seed, epoch, index)`` (see :meth:`set_epoch`);
    validation images are resized (shorter side ``S * 8/7``) and centre-cropped.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        image_size: int,
        tokenizer: CaptionTokenizer,
        max_len: int,
        seed: int = 0,
        augment: bool | None = None,
    ) -> None:
        """Args:
        root: DATA (holding ``coco/``) or the ``coco`` folder itself.
        split: ``"train"`` or ``"val"``.
        image_size: side S of the square images.
        tokenizer: a trained :class:`CaptionTokenizer`.
        max_len: the caption head's ``max_len``.
        seed: base of the augmentation's random numbers.
        augment: training augmentation; defaults to ``split == "train"``.
        """
        if image_size <= 0:
            raise SpgimError(f"caption image size {image_size} must be positive")
        if max_len < 2:
            raise SpgimError(f"caption max_len {max_len} leaves no room for SOS and EOS")
        self.items = load_coco_captions(root, split)
        self.image_size, self.tokenizer, self.max_len = image_size, tokenizer, max_len
        self.seed, self.epoch = seed, 0
        self.augment = split == "train" if augment is None else augment

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation :meth:`__getitem__` applies."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        limit_cv2_threads_in_worker()
        path, caption = self.items[index]
        image = read_rgb(path)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image = _random_resized_crop(image, self.image_size, rng)
            image = jitter_colour(image, rng, hue=0.1, saturation=0.4, value=0.4)
            if rng.random() < 0.5:
                image = np.ascontiguousarray(image[:, ::-1])
                caption = swap_left_right(caption)
        else:
            image = _centre_crop(image, self.image_size, round(self.image_size * 8 / 7))
        ids = self.tokenizer.encode(caption, self.max_len + 1)
        tokens = torch.full((self.max_len + 1,), self.tokenizer.pad_id, dtype=torch.long)
        tokens[: len(ids)] = torch.tensor(ids, dtype=torch.long)
        return {"image": to_tensor(image), "tokens": tokens}
