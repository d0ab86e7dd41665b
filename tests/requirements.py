"""What a test needs from the machine: outside CI a missing piece skips the test, in CI it fails it.

CI (``.ci/run`` sets ``CI``) installs everything the tests need, so a missing tool, package or
compiler there is a broken set-up, not a reason to skip silently.
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
