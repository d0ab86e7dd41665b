"""Live sources against real servers on 127.0.0.1 (see ``servers.py``), and the SRT connection under them.

- SRT: the library's version checked.
"""

from __future__ import annotations

import pytest

from spgim.errors import SpgimError

# --- SRT --------------------------------------------------------------------------------------------


def test_a_library_without_srt_or_too_old_is_the_install_hint() -> None:
    from spgim.streaming import srt

    with pytest.raises(SpgimError, match=r"srt:// needs libsrt 1\.4\.2.*libc\.so\.6 lacks srt_getversion"):
        srt.load_library(("libc.so.6", "libsrt.so.0.9"))  # a real library without libsrt's functions, a missing one
    assert not srt.usable_version(0x010401) and srt.usable_version(0x010402) and srt.usable_version(0x010501)
    assert not srt.usable_version(0x020000)
    assert srt.usable_version(srt.load_library().srt_getversion())  # the installed one, as used
