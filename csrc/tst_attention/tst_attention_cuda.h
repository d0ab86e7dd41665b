// C entry point of the TST attention CUDA kernels: the TensorRT plugin's enqueue() calls it, and the
// shared library tst_attention_cuda_check exports it for ctypes tests on GPU machines without TensorRT.
// Host-only declarations, so plain C++ translation units can include it.
#pragma once

#include <cuda_runtime_api.h>

#if defined(_WIN32)
#define TST_ATTENTION_API __declspec(dllexport)
#else
#define TST_ATTENTION_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum TstAttentionStatus {
  TST_ATTENTION_OK = 0,
  TST_ATTENTION_INVALID_ARGUMENT = 1,     // null pointer, negative extent, no keys, or too large a batch
  TST_ATTENTION_UNSUPPORTED_HEAD_DIM = 2, // d or dv outside [1, 256]
  TST_ATTENTION_UNSUPPORTED_DTYPE = 3,    // dtype neither 0 (fp32) nor 1 (fp16)
  TST_ATTENTION_CUDA_ERROR = 4,           // the launch failed; see cudaGetLastError()
};

enum TstAttentionDtype {
  TST_ATTENTION_FLOAT32 = 0,
  TST_ATTENTION_FLOAT16 = 1,
};

// out (B, N, dv) = softmax(q (B, N, d) k (B, M, d)^T * scale) v (B, M, dv), row-major contiguous device
// tensors of one dtype, computed asynchronously on `stream`. Returns a TstAttentionStatus.
TST_ATTENTION_API int tst_attention_forward(const void* q, const void* k, const void* v, void* out, int B, int N,
                                            int M, int d, int dv, float scale, int dtype, cudaStream_t stream);

TST_ATTENTION_API const char* tst_attention_status_string(int status);

#ifdef __cplusplus
}
#endif
