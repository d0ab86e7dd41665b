"""Shared test fixtures."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores on the build machines: keep torch from oversubscribing them when pytest runs in parallel shells.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
