"""The captioning model that pre-trains SPD's front-end (VirTex-style, paper §3.1 and A.2).

The front-end's last-stage grid (2048 x 7 x 7 for ResNet-50 at 224 px) is linearly projected
to the textual width and decoded by two Transformer decoders, one reading the caption forwards
and one backwards, sharing the token embedding (which also gives the output projection).
Captions are token ids ``[SOS, w1 .. wn, EOS, PAD ..]``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ImageNormalize
from .spd import build_front_end


def reverse_captions(tokens: Tensor, pad_id: int) -> Tensor:
    """``[SOS, w1..wn, EOS, PAD..]`` -> ``[SOS, wn..w1, EOS, PAD..]``, row by row."""
    lengths = (tokens != pad_id).sum(dim=1)  # including SOS and EOS
    positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
    inner = (positions >= 1) & (positions <= (lengths - 2).unsqueeze(1))
    source = torch.where(inner, lengths.unsqueeze(1) - 1 - positions, positions)
    return torch.gather(tokens, 1, source)


class CaptionHead(nn.Module):
    """Visual projection + forward and backward Transformer decoders over a shared embedding."""

    def __init__(self, visual_channels: int, config: dict[str, Any]) -> None:
        super().__init__()
        width = config["width"]
        self.vocab_size = config["vocab_size"]
        self.max_len = config["max_len"]
        self.pad_id, self.sos_id, self.eos_id = config["pad_id"], config["sos_id"], config["eos_id"]
        self.visual_projection = nn.Linear(visual_channels, width)
        self.token_embedding = nn.Embedding(self.vocab_size, width, padding_idx=self.pad_id)
        # The embedding is also the output projection: unit-variance rows would start the logits far
        # from uniform, so start them small as transformer language models do.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        with torch.no_grad():
            self.token_embedding.weight[self.pad_id].zero_()
        self.position_embedding = nn.Embedding(self.max_len, width)
        self.embedding_norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(config["dropout"])

        def decoder() -> nn.TransformerDecoder:
            layer = nn.TransformerDecoderLayer(
                width, config["heads"], config["ffn"], config["dropout"], batch_first=True, norm_first=True
            )
            return nn.TransformerDecoder(layer, config["layers"], norm=nn.LayerNorm(width))

        self.forward_decoder = decoder()
        self.backward_decoder = decoder()

    def visual_tokens(self, grid: Tensor) -> Tensor:
        """``(B, C, h, w)`` grid -> ``(B, h*w, width)`` projected visual tokens."""
        return self.visual_projection(grid.flatten(2).transpose(1, 2))

    def _logits(self, decoder: nn.TransformerDecoder, visual: Tensor, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        positions = torch.arange(length, device=tokens.device)
        x = self.dropout(self.embedding_norm(self.token_embedding(tokens) + self.position_embedding(positions)))
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(diagonal=1)
        x = decoder(x, visual, tgt_mask=causal, tgt_is_causal=True, tgt_key_padding_mask=tokens == self.pad_id)
        return x @ self.token_embedding.weight.t()

    def loss(self, grid: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced cross-entropy, forward plus backward direction.

        Args:
            grid: front-end features ``(B, C, h, w)``.
            tokens: ``(B, T)`` caption ids ``[SOS, .., EOS, PAD ..]`` with ``T <= max_len + 1``.
        """
        visual = self.visual_tokens(grid)
        total = grid.new_zeros(())
        for decoder, seq in (
            (self.forward_decoder, tokens),
            (self.backward_decoder, reverse_captions(tokens, self.pad_id)),
        ):
            logits = self._logits(decoder, visual, seq[:, :-1])
            total = total + F.cross_entropy(
                logits.reshape(-1, self.vocab_size), seq[:, 1:].reshape(-1), ignore_index=self.pad_id
            )
        return total

    @torch.no_grad()
    def greedy_decode(self, grid: Tensor, max_len: int | None = None) -> list[list[int]]:
        """Forward-direction greedy decoding; returns the ids between SOS and EOS for each image."""
        limit = min(max_len or self.max_len, self.max_len)
        visual = self.visual_tokens(grid)
        batch = grid.shape[0]
        tokens = torch.full((batch, 1), self.sos_id, dtype=torch.long, device=grid.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=grid.device)
        for _ in range(limit - 1):
            next_id = self._logits(self.forward_decoder, visual, tokens)[:, -1].argmax(dim=-1)
            next_id = torch.where(finished, torch.full_like(next_id, self.pad_id), next_id)
            tokens = torch.cat([tokens, next_id.unsqueeze(1)], dim=1)
            finished |= next_id == self.eos_id
            if bool(finished.all()):
                break
        captions = []
        for row in tokens[:, 1:].tolist():
            ids = []
            for token in row:
                if token in (self.eos_id, self.pad_id):
                    break
                ids.append(token)
            captions.append(ids)
        return captions


class CaptionModel(nn.Module):
    """SPD's front-end (undilated) + :class:`CaptionHead`, trained on image captions.

    ``config`` is a whole model configuration; the front-end's weights are stored under
    ``backbone.`` exactly as in :class:`~spgim.train.models.spd.SPD`, so SPD initialises from them.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.normalize = ImageNormalize()
        self.backbone = build_front_end(config["spd"], dilate_last=False)
        self.head = CaptionHead(self.backbone.stage_channels[-1], config["caption"])

    def grid(self, image: Tensor) -> Tensor:
        """The last-stage feature grid of RGB images in [0, 1]."""
        return self.backbone(self.normalize(image))[-1]

    def forward(self, image: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced captioning loss for a batch of images and captions."""
        return self.head.loss(self.grid(image), tokens)

    def generate(self, image: Tensor, max_len: int | None = None) -> list[list[int]]:
        """Greedy captions (token ids, without SOS/EOS) for a batch of images."""
        return self.head.greedy_decode(self.grid(image), max_len)
