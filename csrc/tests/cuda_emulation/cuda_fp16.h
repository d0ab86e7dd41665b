// Stand-in for CUDA's cuda_fp16.h in the CPU emulation of the kernel (see cuda_emulation.h).
#pragma once

#include <cstdint>

#include "half_bits.h"

struct __half {
  std::uint16_t bits;
};

inline float __half2float(__half h) { return spgim::tst::half_bits_to_float(h.bits); }
inline __half __float2half_rn(float f) { return __half{spgim::tst::float_to_half_bits(f)}; }
