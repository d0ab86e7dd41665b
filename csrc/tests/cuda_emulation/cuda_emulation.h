// Runs CUDA kernel source on CPU threads, so a machine without a GPU can test a kernel's indexing,
// tiling, masking and arithmetic: each CUDA thread of a block is a std::thread, __syncthreads() is a
// std::barrier, warp shuffles exchange through a buffer between two barriers, __shared__ becomes static
// (blocks run one after another). Not emulated: the GPU memory model, independent warp scheduling,
// launch limits and the device math library. Include before the kernel header, with this folder first on
// the include path so that <cuda_fp16.h> resolves to the stand-in next to this file.
#pragma once

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(threads)
#define __restrict__ __restrict
#define __shared__ static
#define __align__(bytes) __attribute__((aligned(bytes)))

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct alignas(16) float4 {
  float x, y, z, w;
};

using std::min;

namespace cuda_emulation {
inline thread_local dim3 thread_index;
inline thread_local dim3 block_index;
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<float> shuffle_buffer;
}  // namespace cuda_emulation

#define threadIdx cuda_emulation::thread_index
#define blockIdx cuda_emulation::block_index

inline void __syncthreads() { cuda_emulation::block_barrier->arrive_and_wait(); }

// Valid only where every thread of the block shuffles together, as in warp-wide reductions.
inline float __shfl_xor_sync(unsigned /*mask*/, float value, int lane_mask) {
  const unsigned self = threadIdx.x;
  cuda_emulation::shuffle_buffer[self] = value;
  __syncthreads();
  const float other = cuda_emulation::shuffle_buffer[self ^ static_cast<unsigned>(lane_mask)];
  __syncthreads();
  return other;
}

// kernel<<<grid, threads>>>(args...), one block at a time.
template <typename Kernel, typename... Args>
void emulate_launch(Kernel kernel, dim3 grid, unsigned threads, Args... args) {
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      std::barrier<> barrier(threads);
      cuda_emulation::block_barrier = &barrier;
      cuda_emulation::shuffle_buffer.assign(threads, 0.0f);
      std::vector<std::thread> block;
      for (unsigned t = 0; t < threads; ++t) {
        block.emplace_back([=] {
          cuda_emulation::thread_index = dim3(t);
          cuda_emulation::block_index = dim3(bx, by);
          kernel(args...);
        });
      }
      for (std::thread& thread : block) {
        thread.join();
      }
    }
  }
}
