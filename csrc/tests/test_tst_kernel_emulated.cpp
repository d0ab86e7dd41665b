// ctest: the CUDA kernel's source, run on CPU threads (cuda_emulation.h), against the C++ reference.
// Covers the kernel's tiling, tail masking, head-dim chunking and online softmax where no GPU exists;
// the real GPU run is tests/test_native.py::test_cuda_kernel_equals_reference.
#include "cuda_emulation.h"
// The emulation header must come first.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "half_bits.h"
#include "tst_attention_kernel.cuh"
#include "tst_attention_reference.h"

namespace {

using spgim::tst::AttentionShape;

// tst_attention_kernel.cu's launch, emulated.
template <typename T>
void emulated_forward(const T* q, const T* k, const T* v, T* out, const AttentionShape& s, float scale) {
  namespace kernel = spgim::tst::cuda;
  const dim3 grid(static_cast<unsigned>((s.queries + kernel::kQueriesPerBlock - 1) / kernel::kQueriesPerBlock),
                  static_cast<unsigned>(s.batch));
  const auto n = static_cast<int>(s.queries), m = static_cast<int>(s.keys);
  const auto d = static_cast<int>(s.head_dim), dv = static_cast<int>(s.value_dim);
  const float scale_log2 = scale * kernel::kLog2e;
  kernel::with_value_chunks(dv, [&](auto chunks) {
    emulate_launch(kernel::tst_attention_kernel<T, decltype(chunks)::value>, grid, kernel::kThreads, q, k, v, out, n,
                   m, d, dv, scale_log2);
  });
}

struct Case {
  AttentionShape shape;
  float input_std;
};

std::vector<float> random_vector(std::int64_t count, float std, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, std);
  std::vector<float> x(static_cast<std::size_t>(count));
  for (float& value : x) value = normal(rng);
  return x;
}

std::vector<__half> to_half(const std::vector<float>& x) {
  std::vector<__half> h(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) h[i] = __float2half_rn(x[i]);
  return h;
}

bool check_case(const Case& c, std::mt19937& rng) {
  const AttentionShape& s = c.shape;
  const std::vector<float> q = random_vector(s.batch * s.queries * s.head_dim, c.input_std, rng);
  const std::vector<float> k = random_vector(s.batch * s.keys * s.head_dim, c.input_std, rng);
  const std::vector<float> v = random_vector(s.batch * s.keys * s.value_dim, 1.0f, rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const std::size_t outputs = static_cast<std::size_t>(s.batch * s.queries * s.value_dim);

  std::vector<float> want(outputs), got(outputs, NAN);
  spgim::tst::attention_reference(q.data(), k.data(), v.data(), want.data(), s, scale);
  emulated_forward(q.data(), k.data(), v.data(), got.data(), s, scale);
  double err32 = 0.0;
  for (std::size_t i = 0; i < outputs; ++i) {
    const double e = std::abs(static_cast<double>(got[i]) - want[i]);
    err32 = std::isnan(e) ? INFINITY : std::max(err32, e);
  }

  const std::vector<__half> qh = to_half(q), kh = to_half(k), vh = to_half(v);
  std::vector<std::uint16_t> want16(outputs);
  std::vector<__half> got16(outputs, __half{0x7e00});
  static_assert(sizeof(__half) == sizeof(std::uint16_t), "the reference reads the same bits");
  spgim::tst::attention_reference_half(reinterpret_cast<const std::uint16_t*>(qh.data()),
                                       reinterpret_cast<const std::uint16_t*>(kh.data()),
                                       reinterpret_cast<const std::uint16_t*>(vh.data()), want16.data(), s, scale);
  emulated_forward(qh.data(), kh.data(), vh.data(), got16.data(), s, scale);
  double err16 = 0.0;
  for (std::size_t i = 0; i < outputs; ++i) {
    const double e = std::abs(__half2float(got16[i]) - spgim::tst::half_bits_to_float(want16[i]));
    err16 = std::isnan(e) ? INFINITY : std::max(err16, e);
  }

  const double tol32 = 2e-6 * std::max(1.0f, c.input_std * c.input_std);
  const bool ok = err32 <= tol32 && err16 <= 2e-3;
  std::printf("%s B=%lld N=%lld M=%lld d=%lld dv=%lld: fp32 max error %.2e (tolerance %.1e), fp16 %.2e (2e-3)\n",
              ok ? "ok  " : "FAIL", static_cast<long long>(s.batch), static_cast<long long>(s.queries),
              static_cast<long long>(s.keys), static_cast<long long>(s.head_dim), static_cast<long long>(s.value_dim),
              err32, tol32, err16);
  return ok;
}

}  // namespace

int main() {
  std::mt19937 rng(5);
  const std::vector<Case> cases = {
      {{1, 1, 1, 1, 1}, 1.0f},       {{2, 37, 53, 8, 5}, 1.0f},      {{1, 20, 70, 64, 64}, 1.0f},
      {{3, 17, 33, 17, 33}, 1.0f},   {{1, 19, 40, 256, 256}, 1.0f},  {{1, 16, 64, 130, 200}, 1.0f},
      {{2, 9, 45, 64, 40}, 4.0f},    {{1, 5, 37, 16, 100}, 30.0f},
  };
  int failures = 0;
  for (const Case& c : cases) {
    failures += check_case(c, rng) ? 0 : 1;
  }
  return failures == 0 ? 0 : 1;
}
