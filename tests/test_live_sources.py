"""Live sources against real servers on 127.0.0.1 (see ``servers.py``), and the SRT connection under them.

- SRT: secrets out of ``repr``, the library's version checked.
"""

from __future__ import annotations

import pytest

from spgim.errors import SpgimError

# --- SRT --------------------------------------------------------------------------------------------


def test_an_srt_address_keeps_its_secrets_out_of_its_repr() -> None:
    from spgim.streaming.srt import parse_srt_url

    address = parse_srt_url("srt://example.org:9000?streamid=publish:cam:admin:hunter2&passphrase=0123456789ab")
    assert address.passphrase == "0123456789ab" and address.streamid == "publish:cam:admin:hunter2"
    shown = repr(address)
    assert "hunter2" not in shown and "0123456789ab" not in shown and "example.org" in shown
    # A passphrase libsrt would refuse ("Bad parameters") is one line that says why, without it.
    with pytest.raises(SpgimError, match="10 to 79 characters") as refused:
        parse_srt_url("srt://example.org:9000?passphrase=hunter2")
    assert "hunter2" not in str(refused.value)


def test_a_library_without_srt_or_too_old_is_the_install_hint() -> None:
    from spgim.streaming import srt

    with pytest.raises(SpgimError, match=r"srt:// needs libsrt 1\.4\.2.*libc\.so\.6 lacks srt_getversion"):
        srt.load_library(("libc.so.6", "libsrt.so.0.9"))  # a real library without libsrt's functions, a missing one
    assert not srt.usable_version(0x010401) and srt.usable_version(0x010402) and srt.usable_version(0x010501)
    assert not srt.usable_version(0x020000)
    assert srt.usable_version(srt.load_library().srt_getversion())  # the installed one, as used
