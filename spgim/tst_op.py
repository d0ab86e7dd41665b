"""The TST attention as one custom op: its contract, shared by export and runtime.

One name everywhere: ONNX op_type = TensorRT plugin name = creator name = ``TSTAttention``,
version ``"1"``, empty namespace; the ONNX node's attributes are the plugin's fields (``scale``,
float) plus ``plugin_version``. The C++ sources (``csrc/tst_attention``) hold the same constants.
The TensorRT ONNX parser maps a node onto a plugin by op_type, version and namespace and ignores
the node's domain, so the domain is free: we use ``ai.onnx.contrib``, the domain ONNX Runtime
Extensions serves its Python custom ops from, which lets the same file run on the CPU through
our twin (:mod:`spgim.tst_twin`).
"""

from __future__ import annotations

PLUGIN_NAME = "TSTAttention"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
ONNX_DOMAIN = "ai.onnx.contrib"
# The plugin's only field; the ONNX attribute of the same name carries it.
SCALE_FIELD = "scale"
PLUGIN_LIBRARY = "libspgim_tst_plugin.so"


def plugin_description() -> dict[str, str]:
    """What a sidecar records about the plugin a graph or engine needs."""
    return {"name": PLUGIN_NAME, "version": PLUGIN_VERSION, "namespace": PLUGIN_NAMESPACE, "domain": ONNX_DOMAIN}
