// Plain C++ reference of the TST attention, out = softmax(q k^T * scale) v, single head.
//
// Layouts are row-major and contiguous: q (B, N, d), k (B, M, d), v (B, M, dv), out (B, N, dv).
// Keys are consumed in blocks with an online softmax, so the N x M score matrix is never stored
// (N = M = 16384 at the paper's res2 stage); memory is O((N + M) * (d + dv)).
#pragma once

#include <cstdint>

namespace spgim::tst {

struct AttentionShape {
  std::int64_t batch;
  std::int64_t queries;    // N
  std::int64_t keys;       // M
  std::int64_t head_dim;   // d
  std::int64_t value_dim;  // dv
};

// Throws std::invalid_argument unless every extent is >= 0 and keys, head_dim, value_dim are >= 1.
void check_shape(const AttentionShape& shape);

// T is float (the reference the kernels are held to) or double (the reference that one is held to).
// num_threads <= 0 uses every hardware thread.
template <typename T>
void attention_reference(const T* q, const T* k, const T* v, T* out, const AttentionShape& shape, T scale,
                         int num_threads = 0);

// fp16 tensors as raw IEEE half bits; the math runs in fp32, as in the CUDA kernel.
void attention_reference_half(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                              std::uint16_t* out, const AttentionShape& shape, float scale, int num_threads = 0);

}  // namespace spgim::tst
