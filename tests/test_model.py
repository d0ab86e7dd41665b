"""The SPG-IM model: sizes against the paper, TST attention, shapes, gradients, ablations."""

from __future__ import annotations

import pytest
import torch

from spgim.train.config import VARIANTS, get_config
from spgim.train.models import ATTENTION_IMPLS, attention_impl, build_model, focal_mask, saliency_target
from spgim.train.models.attention import QUERY_BLOCK
from spgim.train.models.layers import clamp_unit
from spgim.train.models.spgm import TST
from spgim.train.summary import PAPER_PARAMS_M, count_parameters


def test_paper_parameter_counts_match_table6() -> None:
    config = get_config("paper")
    with torch.device("meta"):
        counts = {"spd": count_parameters(build_model("spd", config))}
        counts["spgm"] = count_parameters(build_model("spgm", config))
    counts["total"] = counts["spd"] + counts["spgm"]
    for key, ours in counts.items():
        print(f"{key}: ours {ours / 1e6:.2f} M, paper Table 6 {PAPER_PARAMS_M[key]:.1f} M")
        assert abs(ours / 1e6 - PAPER_PARAMS_M[key]) / PAPER_PARAMS_M[key] < 0.05


def _reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    q, k, v = q.double(), k.double(), v.double()
    return torch.softmax(q @ k.transpose(1, 2) * scale, dim=-1) @ v


@pytest.mark.parametrize("impl", sorted(ATTENTION_IMPLS))
@pytest.mark.parametrize(("n", "m", "d", "dv"), [(50, 70, 8, 8), (QUERY_BLOCK + 300, 400, 16, 16), (64, 64, 16, 24)])
def test_tst_attention_matches_float64_reference(impl: str, n: int, m: int, d: int, dv: int) -> None:
    q, k, v = torch.randn(2, n, d) * 2, torch.randn(2, m, d) * 2, torch.randn(2, m, dv)
    scale = d**-0.5
    expected = _reference_attention(q, k, v, scale)
    got = ATTENTION_IMPLS[impl](q, k, v, scale)
    assert got.shape == (2, n, dv)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)


def test_attention_impl_switches_and_restores() -> None:
    config = get_config("tiny")
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = spd(image)
        fused = spgm(image, *features)
        with attention_impl(spgm, "matmul"):
            assert {m.impl for m in spgm.modules() if hasattr(m, "impl")} == {"matmul"}
            explicit = spgm(image, *features)
    assert {m.impl for m in spgm.modules() if hasattr(m, "impl")} == {"fused"}
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown attention"), attention_impl(spgm, "nope"):
        pass


@pytest.mark.parametrize("config_name", ["tiny", "paper"])
@pytest.mark.parametrize(("height", "width"), [(96, 160), (160, 64)])
def test_shapes_at_non_square_sizes(config_name: str, height: int, width: int) -> None:
    config = get_config(config_name)
    spd, spgm = build_model("spd", config), build_model("spgm", config)
    channels = [c for c in spgm.encoder.stage_channels]
    image = torch.rand(2, 3, height, width)
    with torch.no_grad():
        mask, r2, r3, r4 = spd.eval()(image)
        assert mask.shape == (2, 1, height // 4, width // 4)
        assert [t.shape[2:] for t in (r2, r3, r4)] == [
            (height // 4, width // 4),
            (height // 8, width // 8),
            (height // 16, width // 16),
        ]
        assert [t.shape[1] for t in (r2, r3, r4)] == channels
        alpha = spgm.eval()(image, mask, r2, r3, r4)
        assert isinstance(alpha, torch.Tensor) and alpha.shape == (2, 1, height, width)
        assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
        assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
        os8, os4, os1 = spgm.train()(image, mask, r2, r3, r4)
    assert os8.shape[2:] == (height // 8, width // 8)
    assert os4.shape[2:] == (height // 4, width // 4)
    assert os1.shape[2:] == (height, width)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_gradients_reach_every_parameter(variant: str) -> None:
    config = get_config("tiny", variant=variant)
    spd, spgm = build_model("spd", config).train(), build_model("spgm", config).train()
    image, target = torch.rand(2, 3, 96, 128), torch.rand(2, 1, 96, 128)
    mask, r2, r3, r4 = spd(image)
    spd_loss = ((mask - saliency_target(target, mask.shape[-2:], 1.0)) ** 2).mean()
    alphas = spgm(image, mask.detach(), r2.detach(), r3.detach(), r4.detach())
    spgm_loss = sum(
        w * (torch.nn.functional.interpolate(a, size=target.shape[-2:]) - target).abs().mean()
        for w, a in zip((1, 2, 3), alphas, strict=True)
    )
    (spd_loss + spgm_loss).backward()
    for model in (spd, spgm):
        missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
        assert not missing, f"{variant}: no gradient for {missing[:5]}"
    has_tst = any(n.startswith("tst.") for n, _ in spgm.named_parameters())
    assert has_tst == VARIANTS[variant][0]


def test_eval_is_deterministic() -> None:
    config = get_config("tiny")
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        first = spgm(image, *spd(image))
        second = spgm(image, *spd(image))
    assert torch.equal(first, second)


def test_focal_mask_is_zero_exactly_at_zero_and_one() -> None:
    alpha = torch.tensor([0.0, 1.0, 0.5, 1e-7, 1.0 - 1e-7, 0.0, 1.0]).view(1, 1, 1, -1)
    assert focal_mask(alpha).flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_saliency_target_is_downsampled_and_blurred() -> None:
    alpha = torch.zeros(1, 1, 64, 64)
    alpha[..., 16:48, 16:48] = 1.0
    sharp = saliency_target(alpha, (16, 16), 0.0)
    blurred = saliency_target(alpha, (16, 16), 1.5)
    assert sharp.shape == blurred.shape == (1, 1, 16, 16)
    assert set(sharp.unique().tolist()) == {0.0, 1.0}
    assert 0.0 < float(blurred[0, 0, 8, 4]) < 1.0  # the edge is soft after blurring
    torch.testing.assert_close(blurred.mean(), sharp.mean(), atol=1e-3, rtol=0)


def test_clamp_unit_passes_the_gradient_in_training_only() -> None:
    x = torch.tensor([-0.5, 0.3, 1.4], requires_grad=True)
    target = torch.tensor([0.8, 0.3, 0.2])
    for training, expected in ((True, [-1.6, 0.0, 1.6]), (False, [0.0, 0.0, 0.0])):
        x.grad = None
        out = clamp_unit(x, training)
        assert torch.equal(out.detach(), torch.tensor([0.0, 0.3, 1.0]))
        ((out - target) ** 2).sum().backward()
        assert x.grad is not None and torch.allclose(x.grad, torch.tensor(expected)), (training, x.grad)


def test_tst_probe_measures_rows_and_replaces_the_retrieval() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "tst_probe.py"
    spec = importlib.util.spec_from_file_location("tst_probe", path)
    assert spec is not None and spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    torch.manual_seed(0)
    q, v = torch.randn(2, 12, 8), torch.randn(2, 16, 5)
    k = torch.randn(2, 16, 8)
    flat = probe.RowStatistics()
    retrieved = flat(q, k, v, 0.0)  # scale 0: every row uniform
    torch.testing.assert_close(retrieved, probe.uniform_rows(q, k, v, 0.0))
    stage = flat.means()["16"]
    assert stage["entropy_over_log_m"] == pytest.approx(1.0) and stage["peak_times_m"] == pytest.approx(1.0)
    assert stage["retrieved_spread"] == pytest.approx(0.0, abs=1e-6)
    sharp = probe.RowStatistics()
    keys = torch.eye(16, 8).expand(2, 16, 8) * 100.0
    sharp(keys[:, :8], keys, v, 1.0)  # each query matches one key: one-hot rows
    stage = sharp.means()["16"]
    assert stage["entropy_over_log_m"] < 0.01 and stage["peak_times_m"] == pytest.approx(16.0, rel=1e-3)
    assert probe.no_retrieval(q, k, v, 1.0).abs().sum() == 0 and probe.no_retrieval(q, k, v, 1.0).shape == (2, 12, 5)
    spgm = build_model("spgm", get_config("tiny")).eval()
    blocks = [m for m in spgm.modules() if isinstance(m, TST)]
    assert blocks and all(block.kv_stride == 1 for block in blocks)
    feature = torch.rand(1, blocks[0].key.in_channels, 16, 16)
    guide = torch.rand(1, blocks[0].guide_key.in_channels, 16, 16)
    with torch.no_grad():
        full = blocks[0](feature, guide)
        with probe.pooled_keys(spgm, 2):
            assert all(block.kv_stride == 2 for block in blocks)
            pooled = blocks[0](feature, guide)
    assert all(block.kv_stride == 1 for block in blocks)
    assert pooled.shape == full.shape and not torch.allclose(pooled, full)
    assert probe.mean_difference([feature], [feature + 0.25]) == pytest.approx(0.25)
