"""The recurrent SPGM (``spgm.recurrent``): a fresh one is the stateless model, its state is explicit and cheap."""

from __future__ import annotations

import copy

import pytest
import torch

from spgim.train.config import LIVE_RECURRENT, get_config
from spgim.train.models import build_model
from spgim.train.summary import model_summary


def _pair(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """SPD, the stateless live SPGM and a fresh recurrent SPGM holding the same weights."""
    torch.manual_seed(seed)
    config = get_config("live")
    spd, stateless = build_model("spd", config).eval(), build_model("spgm", config).eval()
    recurrent_config = copy.deepcopy(config)
    recurrent_config["spgm"]["recurrent"] = LIVE_RECURRENT
    recurrent = build_model("spgm", recurrent_config).eval()
    missing, unexpected = recurrent.load_state_dict(stateless.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("recurrent.") for key in missing)
    return spd, stateless, recurrent


@torch.no_grad()
def test_a_fresh_recurrent_model_equals_the_stateless_one_frame_by_frame() -> None:
    spd, stateless, recurrent = _pair()
    generator = torch.Generator().manual_seed(1)
    frames = torch.rand(6, 1, 3, 192, 320, generator=generator)
    state: tuple[torch.Tensor, ...] = ()
    for index, image in enumerate(frames):
        features = spd(image)
        expected = stateless(image, *features)
        alpha, *new_state = recurrent(image, *features, *state)
        assert torch.equal(alpha, expected), index
        assert [tuple(s.shape) for s in new_state] == recurrent.state_shapes(1, 192, 320)
        if index:  # the state moves from frame to frame, even while it does not show yet
            assert any(not torch.equal(a, b) for a, b in zip(state, new_state, strict=True))
        state = tuple(new_state)


def test_state_names_shapes_and_a_wrong_count() -> None:
    _, stateless, recurrent = _pair()
    assert stateless.state_names == () and stateless.state_shapes(1, 192, 320) == []
    assert recurrent.state_names == ("state_os16", "state_os8", "state_os4")
    assert recurrent.state_shapes(2, 192, 320) == [(2, 8, 12, 20), (2, 8, 24, 40), (2, 4, 48, 80)]
    image = torch.rand(1, 3, 192, 320)
    with torch.no_grad(), pytest.raises(ValueError, match="takes 3 state tensors"):
        recurrent(image, *build_model("spd", get_config("live")).eval()(image), torch.zeros(1, 8, 12, 20))


def test_trained_units_change_the_alpha_and_gradients_reach_them() -> None:
    spd, _, recurrent = _pair()
    recurrent.train()
    image = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        features = spd(image)
    *_, alpha, s16, s8, s4 = recurrent(image, *features)
    (alpha.mean() + s16.mean() + s8.mean() + s4.mean()).backward()
    units = recurrent.recurrent
    assert all(
        unit.residual.weight.grad is not None and unit.residual.weight.grad.abs().sum() > 0 for unit in units.values()
    )


def test_the_recurrent_units_cost_under_a_tenth_of_spgm() -> None:
    config = get_config("live")
    recurrent_config = copy.deepcopy(config)
    recurrent_config["spgm"]["recurrent"] = LIVE_RECURRENT
    plain = model_summary(config, 192, 320)["flops"]["spgm"]
    with_memory = model_summary(recurrent_config, 192, 320)["flops"]["spgm"]
    assert plain < with_memory <= 1.10 * plain, (plain, with_memory)
