#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, CUDA and TensorRT 10/11 (the Python wheel, and headers + libraries
# under $TensorRT_ROOT), optionally onnxruntime-gpu: build the plugin, run the native tests, export
# TorchScript, both ONNX flavours and the fp32/fp16/int8 engines, run the GPU runtime tests, then compare every GPU
# backend (TensorRT engines, ONNX Runtime TensorRT/CUDA providers, TorchScript on CUDA) with ONNX Runtime
# on the CPU and print fp16 and int8 vs fp32 throughput (int8 written even if it misses its gate: the
# sidecar says whether it passed).
#   TensorRT_ROOT=/opt/TensorRT bash scripts/gpu_check.sh runs/spd/best.pt runs/spgm/best.pt [SIZE]
set -euo pipefail
cd "$(dirname "$0")/.."
spd=${1:?usage: gpu_check.sh SPD_CHECKPOINT SPGM_CHECKPOINT [SIZE]}
spgm=${2:?usage: gpu_check.sh SPD_CHECKPOINT SPGM_CHECKPOINT [SIZE]}
size=${3:-512}
python=${PYTHON:-.venv/bin/python}
plugin=build/native/libspgim_tst_plugin.so
cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release ${TensorRT_ROOT:+-DTensorRT_ROOT="$TensorRT_ROOT"}
cmake --build build/native -j"$(nproc)"
ctest --test-dir build/native --output-on-failure
"$python" -m pytest -q -rs tests/test_native.py tests/test_runtime_gpu.py
"$python" -m spgim export --spd "$spd" --spgm "$spgm" --out build/gpu_check \
    --formats torchscript,onnx,onnx-trt,engine --precision fp32,fp16,int8 --accept-accuracy-loss \
    --height "$size" --width "$size" --plugin "$plugin"
"$python" scripts/gpu_check.py build/gpu_check --plugin "$plugin" --json build/gpu_check/report.json
