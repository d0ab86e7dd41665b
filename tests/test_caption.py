"""The captioning head that pre-trains SPD's front-end."""

from __future__ import annotations

import torch

from spgim.train.config import get_config
from spgim.train.models import build_model
from spgim.train.models.caption import reverse_captions

PAD, SOS, EOS = 0, 1, 2


def _batch(captions: list[list[int]], length: int) -> torch.Tensor:
    rows = [[SOS, *c, EOS] + [PAD] * (length - len(c) - 2) for c in captions]
    return torch.tensor(rows)


def test_reverse_captions_keeps_sos_eos_and_padding() -> None:
    tokens = _batch([[5, 6, 7], [8]], 7)
    assert reverse_captions(tokens, PAD).tolist() == [
        [SOS, 7, 6, 5, EOS, PAD, PAD],
        [SOS, 8, EOS, PAD, PAD, PAD, PAD],
    ]


def test_caption_head_overfits_four_captions_and_decodes_one() -> None:
    config = get_config("tiny", caption__vocab_size=24)
    model = build_model("caption", config)
    captions = [[3, 4, 5, 6], [7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18]]
    tokens = _batch(captions, 8)
    images = torch.rand(4, 3, 64, 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = model(images, tokens)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], f"loss fell from {losses[0]:.3f} to only {losses[-1]:.3f}"
    model.eval()
    decoded = model.generate(images)
    assert any(d == c for d, c in zip(decoded, captions, strict=True)), decoded
