"""What a test needs from the machine; every skip in the suite goes through here.

- A tool, package or compiler the set-up installs (:func:`unavailable`, :func:`needs_tool`): outside CI
  a missing one skips the test, in CI it fails it. CI (``.ci/run`` sets ``CI``) installs everything the
  tests need, so a missing piece there is a broken set-up, not a reason to skip silently.
- Hardware the project's build machines and CI never have, or a feature this CPU happens to have or lack
  (:func:`not_this_machine`, :func:`needs_hardware`): a CUDA GPU, TensorRT (its PyPI wheels are stubs),
  a CPU flag. These skip everywhere, with the reason.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test with ``reason``, or fail it when the ``CI`` variable is set."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: its set-up must provide this)", pytrace=False)
    pytest.skip(reason)


def needs_tool(reason: str | None) -> pytest.MarkDecorator:
    """Mark a test that needs a tool the set-up provides; ``reason`` says what is missing (None: nothing).

    Outside CI the test is skipped; in CI it runs, and fails where the tool is missing.
    """
    return pytest.mark.skipif(reason is not None and not os.environ.get("CI"), reason=reason or "")


def not_this_machine(reason: str) -> NoReturn:
    """Skip the calling test: it needs hardware this machine lacks (a GPU, TensorRT), or a CPU that differs."""
    pytest.skip(reason)


def needs_hardware(reason: str | None) -> pytest.MarkDecorator:
    """Mark a test that needs hardware this machine may lack; ``reason`` says what (None: it is here)."""
    return pytest.mark.skipif(reason is not None, reason=reason or "")
