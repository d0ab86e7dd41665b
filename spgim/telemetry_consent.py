"""No usage reports leave the machine unless the user asked for them.

OpenVINO's model conversion (``openvino.convert_model``) and NNCF send usage telemetry to Google Analytics by
default: where the user never answered OpenVINO's consent question (no ``~/intel/openvino_telemetry`` file), they
treat silence as consent. spgim calls both while exporting, and a deployment tool should not report from its
users' machines on their behalf; on a machine without network the reporter can also stall an export (it resolves
the analytics host name in a forked process, and a fork of a multithreaded exporter can hang there).

:func:`decline_unasked_telemetry` makes silence mean no, for this process only: an explicit choice recorded with
OpenVINO's ``opt_in_out --opt_in`` or ``--opt_out`` is still obeyed, and no file is written.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def decline_unasked_telemetry() -> bool:
    """Make OpenVINO's consent check answer "declined" where the user never chose; True once that is in place,
    False where OpenVINO's telemetry package is not installed (then nothing can report). Call it before importing
    NNCF or converting a model with OpenVINO."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        return False
    asked = OptInChecker.check

    def check(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = asked(self, *args, **kwargs)
        return ConsentCheckResult.DECLINED if result == ConsentCheckResult.NO_FILE else result

    OptInChecker.check = check
    return True
