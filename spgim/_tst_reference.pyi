"""Type stub of the compiled C++ reference of the TST attention (csrc/python/tst_reference_module.cpp)."""

from typing import Any

MAX_HEAD_DIM: int
PLUGIN_NAME: str
PLUGIN_NAMESPACE: str
PLUGIN_VERSION: str
SCALE_FIELD: str

def attention(q: Any, k: Any, v: Any, out: Any, scale: float, num_threads: int) -> None: ...
