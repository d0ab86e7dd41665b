#!/usr/bin/env bash
# Build and test the native code of the TST attention op: the C++ reference and its ctest (always), the CUDA
# kernels (where nvcc is found) and the TensorRT plugin (where TensorRT is found too).
#
#   scripts/build_native.sh                              build/native, then ctest
#   scripts/build_native.sh -DTensorRT_ROOT=/opt/tensorrt   extra CMake arguments pass through
#   scripts/build_native.sh --plugin-headers DIR         compile the plugin to objects against TensorRT headers only
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)

if [[ "${1:-}" == "--plugin-headers" ]]; then
  include=$(realpath "$2")
  shift 2
  build="build/plugin-objects/$(basename "$(dirname "$include")")"
  cmake -S . -B "$build" -DSPGIM_PLUGIN_OBJECTS_ONLY=ON -DTensorRT_INCLUDE_DIR="$include" \
    -DSPGIM_BUILD_CUDA=OFF -DSPGIM_BUILD_TESTS=OFF -DSPGIM_WARNINGS_AS_ERRORS=ON "$@"
  cmake --build "$build" --parallel "$jobs" --target spgim_tst_plugin_objects
  exit 0
fi

build=${SPGIM_NATIVE_BUILD:-build/native}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" --parallel "$jobs"
ctest --test-dir "$build" --output-on-failure
