// Launcher of the TST attention CUDA kernel (tst_attention_kernel.cuh) behind the C entry point of
// tst_attention_cuda.h: argument checks, then one launch on the caller's stream.
#include <cuda_fp16.h>

#include "tst_attention_common.h"
#include "tst_attention_cuda.h"
#include "tst_attention_kernel.cuh"

namespace {

using namespace spgim::tst::cuda;

constexpr int kMaxGridY = 65535;

template <typename T>
int launch(const void* q, const void* k, const void* v, void* out, int batch, int n, int m, int d, int dv,
           float scale, cudaStream_t stream) {
  const dim3 grid((n + kQueriesPerBlock - 1) / kQueriesPerBlock, batch);
  const float scale_log2 = scale * kLog2e;
  const auto* qt = static_cast<const T*>(q);
  const auto* kt = static_cast<const T*>(k);
  const auto* vt = static_cast<const T*>(v);
  auto* ot = static_cast<T*>(out);
  with_value_chunks(dv, [&](auto chunks) {
    tst_attention_kernel<T, decltype(chunks)::value><<<grid, kThreads, 0, stream>>>(qt, kt, vt, ot, n, m, d, dv,
                                                                                   scale_log2);
  });
  return cudaGetLastError() == cudaSuccess ? TST_ATTENTION_OK : TST_ATTENTION_CUDA_ERROR;
}

}  // namespace

extern "C" int tst_attention_forward(const void* q, const void* k, const void* v, void* out, int B, int N, int M,
                                     int d, int dv, float scale, int dtype, cudaStream_t stream) {
  if (dtype != TST_ATTENTION_FLOAT32 && dtype != TST_ATTENTION_FLOAT16) {
    return TST_ATTENTION_UNSUPPORTED_DTYPE;
  }
  if (d < 1 || d > spgim::tst::kMaxHeadDim || dv < 1 || dv > spgim::tst::kMaxHeadDim) {
    return TST_ATTENTION_UNSUPPORTED_HEAD_DIM;
  }
  if (B < 0 || N < 0 || M < 1 || B > kMaxGridY) {
    return TST_ATTENTION_INVALID_ARGUMENT;
  }
  if (B == 0 || N == 0) {
    return TST_ATTENTION_OK;
  }
  if (q == nullptr || k == nullptr || v == nullptr || out == nullptr) {
    return TST_ATTENTION_INVALID_ARGUMENT;
  }
  return dtype == TST_ATTENTION_FLOAT32 ? launch<float>(q, k, v, out, B, N, M, d, dv, scale, stream)
                                        : launch<__half>(q, k, v, out, B, N, M, d, dv, scale, stream);
}

extern "C" const char* tst_attention_status_string(int status) {
  switch (status) {
    case TST_ATTENTION_OK:
      return "ok";
    case TST_ATTENTION_INVALID_ARGUMENT:
      return "invalid argument: null pointer, negative extent, no keys (M < 1) or batch > 65535";
    case TST_ATTENTION_UNSUPPORTED_HEAD_DIM:
      return "unsupported head dim: d and dv must be in [1, 256]";
    case TST_ATTENTION_UNSUPPORTED_DTYPE:
      return "unsupported dtype: 0 (float32) or 1 (float16)";
    case TST_ATTENTION_CUDA_ERROR:
      return "CUDA kernel launch failed";
    default:
      return "unknown status";
  }
}
