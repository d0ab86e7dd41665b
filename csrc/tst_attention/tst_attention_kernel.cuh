// CUDA kernel of the TST attention, out = softmax(q k^T * scale) v, fp32 and fp16 (fp16 in and out,
// fp32 accumulation and softmax). Flash-attention style: a block owns 16 queries and streams the keys
// in tiles of 32 with an online softmax, so the N x M score matrix never exists.
//
// Work split: each warp owns 4 query rows. Scores: lane j computes the logits of key j of the tile for
// the warp's 4 queries (queries broadcast from shared memory, keys read by row). Values: lane l
// accumulates output columns l and l + 32 of every 64-wide value chunk, for the same 4 queries.
//
// Device code only: tst_attention_kernel.cu launches it; csrc/tests/test_tst_kernel_emulated.cpp runs
// it on CPU threads (csrc/tests/cuda_emulation) so the tiling is tested where there is no GPU.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "tst_attention_common.h"

namespace spgim::tst::cuda {

constexpr int kWarpSize = 32;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kQueriesPerWarp = 4;
constexpr int kQueriesPerBlock = kWarps * kQueriesPerWarp;
constexpr int kKeyTile = kWarpSize;  // One key per lane.
constexpr int kDimChunk = 64;        // Head / value dims staged in shared memory per pass.
constexpr int kKeyStride = kDimChunk + 4;  // Padding: float4 reads of lane-indexed rows hit distinct banks.
constexpr int kMaxValueChunks = kMaxHeadDim / kDimChunk;  // Template values of kValueChunks: 1 to 4.
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

__device__ __forceinline__ float warp_max(float x) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  }
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    x += __shfl_xor_sync(0xffffffffu, x, offset);
  }
  return x;
}

__device__ __forceinline__ float component(const float4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

__device__ __forceinline__ int round_up4(int x) { return (x + 3) & ~3; }

// kValueChunks = ceil(dv / 64) is a template argument so the output accumulators stay in registers.
template <typename T, int kValueChunks>
__global__ void __launch_bounds__(kThreads)
    tst_attention_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         T* __restrict__ out, int n, int m, int d, int dv, float scale_log2) {
  __shared__ __align__(16) float q_tile[kQueriesPerBlock][kMaxHeadDim];
  __shared__ __align__(16) float k_tile[kKeyTile][kKeyStride];
  __shared__ __align__(16) float v_tile[kKeyTile][kDimChunk];
  __shared__ __align__(16) float p_tile[kWarps][kQueriesPerWarp][kKeyTile];

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const std::int64_t batch = blockIdx.y;
  const int query0 = blockIdx.x * kQueriesPerBlock;
  const T* qb = q + batch * n * d;
  const T* kb = k + batch * m * d;
  const T* vb = v + batch * m * dv;

  // Queries are pre-scaled by scale * log2(e) so the softmax runs on exp2; zero padding up to a
  // multiple of 4 keeps the float4 reads below inside defined data.
  const int d4 = round_up4(d);
  for (int i = threadIdx.x; i < kQueriesPerBlock * d4; i += kThreads) {
    const int r = i / d4;
    const int c = i % d4;
    const int row = query0 + r;
    q_tile[r][c] = (row < n && c < d) ? to_float(qb[static_cast<std::int64_t>(row) * d + c]) * scale_log2 : 0.0f;
  }

  float o[kQueriesPerWarp][2 * kValueChunks] = {};
  float row_max[kQueriesPerWarp];
  float row_sum[kQueriesPerWarp];
#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    row_max[qi] = -INFINITY;
    row_sum[qi] = 0.0f;
  }

  for (int key0 = 0; key0 < m; key0 += kKeyTile) {
    float logit[kQueriesPerWarp] = {};
    for (int c0 = 0; c0 < d; c0 += kDimChunk) {
      const int width = min(kDimChunk, d - c0);
      const int width4 = round_up4(width);
      __syncthreads();  // The previous chunk's readers are done with k_tile (and q_tile is written).
      for (int i = threadIdx.x; i < kKeyTile * width4; i += kThreads) {
        const int j = i / width4;
        const int c = i % width4;
        const int key = key0 + j;
        k_tile[j][c] = (key < m && c < width) ? to_float(kb[static_cast<std::int64_t>(key) * d + c0 + c]) : 0.0f;
      }
      __syncthreads();
#pragma unroll 4
      for (int c = 0; c < width4; c += 4) {
        const float4 kv = *reinterpret_cast<const float4*>(&k_tile[lane][c]);
#pragma unroll
        for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
          const float4 qv = *reinterpret_cast<const float4*>(&q_tile[warp * kQueriesPerWarp + qi][c0 + c]);
          logit[qi] = fmaf(qv.x, kv.x, logit[qi]);
          logit[qi] = fmaf(qv.y, kv.y, logit[qi]);
          logit[qi] = fmaf(qv.z, kv.z, logit[qi]);
          logit[qi] = fmaf(qv.w, kv.w, logit[qi]);
        }
      }
    }

    const bool valid = key0 + lane < m;
#pragma unroll
    for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
      const float x = valid ? logit[qi] : -INFINITY;
      const float new_max = fmaxf(row_max[qi], warp_max(x));
      const float p = valid ? exp2f(x - new_max) : 0.0f;
      const float rescale = exp2f(row_max[qi] - new_max);  // 0 on the first tile, where row_max is -inf.
      row_sum[qi] = row_sum[qi] * rescale + warp_sum(p);
      row_max[qi] = new_max;
#pragma unroll
      for (int t = 0; t < 2 * kValueChunks; ++t) {
        o[qi][t] *= rescale;
      }
      p_tile[warp][qi][lane] = p;
    }

#pragma unroll
    for (int chunk = 0; chunk < kValueChunks; ++chunk) {
      const int c0 = chunk * kDimChunk;
      __syncthreads();  // p_tile is written; the previous chunk's readers are done with v_tile.
      for (int i = threadIdx.x; i < kKeyTile * kDimChunk; i += kThreads) {
        const int j = i / kDimChunk;
        const int c = i % kDimChunk;
        const int key = key0 + j;
        v_tile[j][c] =
            (key < m && c0 + c < dv) ? to_float(vb[static_cast<std::int64_t>(key) * dv + c0 + c]) : 0.0f;
      }
      __syncthreads();
#pragma unroll 2
      for (int j = 0; j < kKeyTile; j += 4) {
        float4 p4[kQueriesPerWarp];
#pragma unroll
        for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
          p4[qi] = *reinterpret_cast<const float4*>(&p_tile[warp][qi][j]);
        }
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
          const float v0 = v_tile[j + jj][lane];
          const float v1 = v_tile[j + jj][lane + kWarpSize];
#pragma unroll
          for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
            const float pj = component(p4[qi], jj);
            o[qi][2 * chunk] = fmaf(pj, v0, o[qi][2 * chunk]);
            o[qi][2 * chunk + 1] = fmaf(pj, v1, o[qi][2 * chunk + 1]);
          }
        }
      }
    }
  }

#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    const int row = query0 + warp * kQueriesPerWarp + qi;
    if (row >= n) {
      continue;
    }
    T* out_row = out + (batch * n + row) * dv;
#pragma unroll
    for (int t = 0; t < 2 * kValueChunks; ++t) {
      const int col = (t / 2) * kDimChunk + (t % 2) * kWarpSize + lane;
      if (col < dv) {
        out_row[col] = from_float<T>(o[qi][t] / row_sum[qi]);
      }
    }
  }
}

// Calls launch(std::integral_constant<int, ceil(dv / 64)>) for dv in [1, kMaxHeadDim], so that the
// launcher (and the CPU emulation test) pick the kernel's kValueChunks the same way.
template <typename Launch>
void with_value_chunks(int dv, Launch&& launch) {
  static_assert(kMaxValueChunks == 4, "the cases below cover dv up to kMaxHeadDim");
  switch ((dv + kDimChunk - 1) / kDimChunk) {
    case 1:
      launch(std::integral_constant<int, 1>{});
      break;
    case 2:
      launch(std::integral_constant<int, 2>{});
      break;
    case 3:
      launch(std::integral_constant<int, 3>{});
      break;
    default:
      launch(std::integral_constant<int, 4>{});
      break;
  }
}

}  // namespace spgim::tst::cuda
