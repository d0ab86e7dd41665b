// The TST attention op's names and limits: the single source for the TensorRT plugin, its creator,
// the CUDA launcher, the C++ reference and (through the Python binding) the ONNX exporter.
#pragma once

namespace spgim::tst {

// ONNX op_type == TensorRT plugin name == creator name.
inline constexpr char kPluginName[] = "TSTAttention";
inline constexpr char kPluginVersion[] = "1";
inline constexpr char kPluginNamespace[] = "";
// ONNX attribute name == PluginField name (kFLOAT32).
inline constexpr char kScaleField[] = "scale";

// Largest head dim d and value dim dv the CUDA kernels accept.
inline constexpr int kMaxHeadDim = 256;

}  // namespace spgim::tst
