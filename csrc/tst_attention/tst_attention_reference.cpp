#include "tst_attention_reference.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "half_bits.h"
#include "parallel_for.h"

namespace spgim::tst {
namespace {

constexpr std::int64_t kQueryTile = 32;  // Query rows that share one pass over a key block (cache reuse).
constexpr std::int64_t kKeyBlock = 64;   // Keys per online-softmax step.
constexpr int kRows = 4;                 // Register blocking of the small matrix products:
constexpr int kLanes = 16;               // rows x lanes independent accumulators.

std::int64_t key_blocks(const AttentionShape& s) { return (s.keys + kKeyBlock - 1) / kKeyBlock; }

// Keys repacked per block of kKeyBlock keys as (B, blocks, d, kKeyBlock), zero-padded: q k^T then reads
// contiguous keys (as p v reads contiguous values), both products run as independent multiply-adds with
// no reduction to reassociate, and a block's keys sit together instead of M floats apart, which would
// map all d rows onto a few cache sets.
template <typename Src, typename T, typename Convert>
std::vector<T> pack_keys(const Src* k, const AttentionShape& s, Convert convert) {
  const std::int64_t blocks = key_blocks(s);
  std::vector<T> packed(static_cast<std::size_t>(s.batch * blocks * s.head_dim * kKeyBlock), T(0));
  for (std::int64_t b = 0; b < s.batch; ++b) {
    for (std::int64_t j = 0; j < s.keys; ++j) {
      const Src* key = k + (b * s.keys + j) * s.head_dim;
      T* column = packed.data() + ((b * blocks + j / kKeyBlock) * s.head_dim) * kKeyBlock + j % kKeyBlock;
      for (std::int64_t c = 0; c < s.head_dim; ++c) {
        column[c * kKeyBlock] = convert(key[c]);
      }
    }
  }
  return packed;
}

#if defined(__GNUC__)
// A 16-byte generic vector (SSE2 / NEON baseline, no -march needed). GCC's loop vectoriser would
// otherwise vectorise the plain loops below along x as an in-order reduction, with shuffles, 3x slower.
template <typename T>
struct Vec16 {
  typedef T type __attribute__((vector_size(16)));
  static constexpr int kWidth = 16 / sizeof(T);
};

template <typename T>
typename Vec16<T>::type load16(const T* p) {
  typename Vec16<T>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
#endif

// c[r][t] (+)= sum_x a[r][x] * b[x][t] for R rows and `cols` columns. Every element sums over x in
// order, in the blocked and in the tail loop alike, so the blocking never changes a result.
template <int R, typename T>
void small_gemm(const T* a, std::int64_t lda, const T* b, std::int64_t ldb, std::int64_t inner, T* c,
                std::int64_t ldc, std::int64_t cols, bool accumulate) {
  std::int64_t t0 = 0;
#if defined(__GNUC__)
  using V = typename Vec16<T>::type;
  constexpr int kWidth = Vec16<T>::kWidth;
  constexpr int kVectors = kLanes / kWidth;
  for (; t0 + kLanes <= cols; t0 += kLanes) {
    V acc[R][kVectors];
    for (int r = 0; r < R; ++r) {
      for (int u = 0; u < kVectors; ++u) {
        acc[r][u] = accumulate ? load16(c + r * ldc + t0 + u * kWidth) : V{};
      }
    }
    for (std::int64_t x = 0; x < inner; ++x) {
      V br[kVectors];
      for (int u = 0; u < kVectors; ++u) {
        br[u] = load16(b + x * ldb + t0 + u * kWidth);
      }
      for (int r = 0; r < R; ++r) {
        const T ar = a[r * lda + x];
        for (int u = 0; u < kVectors; ++u) {
          acc[r][u] += ar * br[u];
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int u = 0; u < kVectors; ++u) {
        std::memcpy(c + r * ldc + t0 + u * kWidth, &acc[r][u], sizeof(V));
      }
    }
  }
#else
  for (; t0 + kLanes <= cols; t0 += kLanes) {
    T acc[R][kLanes];
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < kLanes; ++t) {
        acc[r][t] = accumulate ? c[r * ldc + t0 + t] : T(0);
      }
    }
    for (std::int64_t x = 0; x < inner; ++x) {
      for (int r = 0; r < R; ++r) {
        for (int t = 0; t < kLanes; ++t) {
          acc[r][t] += a[r * lda + x] * b[x * ldb + t0 + t];
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < kLanes; ++t) {
        c[r * ldc + t0 + t] = acc[r][t];
      }
    }
  }
#endif
  for (; t0 < cols; ++t0) {
    for (int r = 0; r < R; ++r) {
      T acc = accumulate ? c[r * ldc + t0] : T(0);
      for (std::int64_t x = 0; x < inner; ++x) {
        acc += a[r * lda + x] * b[x * ldb + t0];
      }
      c[r * ldc + t0] = acc;
    }
  }
}

template <typename T>
void gemm_rows(std::int64_t rows, const T* a, std::int64_t lda, const T* b, std::int64_t ldb, std::int64_t inner,
               T* c, std::int64_t ldc, std::int64_t cols, bool accumulate) {
  if (rows == kRows) {
    small_gemm<kRows>(a, lda, b, ldb, inner, c, ldc, cols, accumulate);
    return;
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    small_gemm<1>(a + r * lda, lda, b, ldb, inner, c + r * ldc, ldc, cols, accumulate);
  }
}

// One online-softmax step for one query row: turn a block of logits into weights p (in place) and
// fold the block into the running max and sum, rescaling the row's accumulated output o.
template <typename T>
void online_softmax_step(T* logits, std::int64_t nk, T scale, std::int64_t dv, T& max, T& sum, T* o) {
  T block_max = -std::numeric_limits<T>::infinity();
  for (std::int64_t j = 0; j < nk; ++j) {
    logits[j] *= scale;
    block_max = std::max(block_max, logits[j]);
  }
  const T new_max = std::max(max, block_max);
  T block_sum = 0;
  for (std::int64_t j = 0; j < nk; ++j) {
    logits[j] = std::exp(logits[j] - new_max);
    block_sum += logits[j];
  }
  if (new_max != max) {
    const T rescale = std::exp(max - new_max);  // 0 on the first block, where max is -inf.
    sum *= rescale;
    for (std::int64_t c = 0; c < dv; ++c) {
      o[c] *= rescale;
    }
    max = new_max;
  }
  sum += block_sum;
}

// out rows [0, rows) of one query tile; kt is that batch's packed keys.
template <typename T>
void attention_tile(const T* q, const T* kt, const T* v, T* out, const AttentionShape& s, T scale, std::int64_t rows) {
  const std::int64_t d = s.head_dim;
  const std::int64_t dv = s.value_dim;
  std::vector<T> o(static_cast<std::size_t>(rows * dv), T(0));
  std::vector<T> max(static_cast<std::size_t>(rows), -std::numeric_limits<T>::infinity());
  std::vector<T> sum(static_cast<std::size_t>(rows), T(0));
  T p[kRows * kKeyBlock];
  for (std::int64_t j0 = 0; j0 < s.keys; j0 += kKeyBlock) {
    const std::int64_t nk = std::min(kKeyBlock, s.keys - j0);
    for (std::int64_t r0 = 0; r0 < rows; r0 += kRows) {
      const std::int64_t group = std::min<std::int64_t>(kRows, rows - r0);
      gemm_rows(group, q + r0 * d, d, kt + (j0 / kKeyBlock) * d * kKeyBlock, kKeyBlock, d, p, kKeyBlock, nk,
                false);
      for (std::int64_t r = 0; r < group; ++r) {
        online_softmax_step(p + r * kKeyBlock, nk, scale, dv, max[r0 + r], sum[r0 + r], o.data() + (r0 + r) * dv);
      }
      gemm_rows(group, p, kKeyBlock, v + j0 * dv, dv, nk, o.data() + r0 * dv, dv, dv, true);
    }
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < dv; ++c) {
      out[r * dv + c] = o[r * dv + c] / sum[r];
    }
  }
}

template <typename T>
void attention_packed(const T* q, const T* kt, const T* v, T* out, const AttentionShape& s, T scale,
                          int num_threads) {
  const std::int64_t tiles = (s.queries + kQueryTile - 1) / kQueryTile;
  parallel_for(s.batch * tiles, num_threads, [&](std::int64_t item) {
    const std::int64_t b = item / tiles;
    const std::int64_t row0 = (item % tiles) * kQueryTile;
    const std::int64_t rows = std::min(kQueryTile, s.queries - row0);
    attention_tile(q + (b * s.queries + row0) * s.head_dim, kt + b * key_blocks(s) * s.head_dim * kKeyBlock,
                   v + b * s.keys * s.value_dim, out + (b * s.queries + row0) * s.value_dim, s, scale, rows);
  });
}

}  // namespace

void check_shape(const AttentionShape& s) {
  if (s.batch < 0 || s.queries < 0 || s.keys < 1 || s.head_dim < 1 || s.value_dim < 1) {
    throw std::invalid_argument("TSTAttention: need batch >= 0, queries >= 0, keys >= 1, head_dim >= 1, value_dim >= 1;"
                                " got B=" + std::to_string(s.batch) + " N=" + std::to_string(s.queries) +
                                " M=" + std::to_string(s.keys) + " d=" + std::to_string(s.head_dim) +
                                " dv=" + std::to_string(s.value_dim));
  }
}

template <typename T>
void attention_reference(const T* q, const T* k, const T* v, T* out, const AttentionShape& shape, T scale,
                         int num_threads) {
  check_shape(shape);
  const std::vector<T> kt = pack_keys<T, T>(k, shape, [](T x) { return x; });
  attention_packed(q, kt.data(), v, out, shape, scale, num_threads);
}

template void attention_reference<float>(const float*, const float*, const float*, float*, const AttentionShape&,
                                         float, int);
template void attention_reference<double>(const double*, const double*, const double*, double*,
                                          const AttentionShape&, double, int);

void attention_reference_half(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                              std::uint16_t* out, const AttentionShape& shape, float scale, int num_threads) {
  check_shape(shape);
  auto widen = [](const std::uint16_t* src, std::int64_t count) {
    std::vector<float> dst(static_cast<std::size_t>(count));
    std::transform(src, src + count, dst.begin(), half_bits_to_float);
    return dst;
  };
  const std::vector<float> qf = widen(q, shape.batch * shape.queries * shape.head_dim);
  const std::vector<float> vf = widen(v, shape.batch * shape.keys * shape.value_dim);
  const std::vector<float> kt = pack_keys<std::uint16_t, float>(k, shape, half_bits_to_float);
  std::vector<float> of(static_cast<std::size_t>(shape.batch * shape.queries * shape.value_dim));
  attention_packed(qf.data(), kt.data(), vf.data(), of.data(), shape, scale, num_threads);
  std::transform(of.begin(), of.end(), out, float_to_half_bits);
}

}  // namespace spgim::tst
