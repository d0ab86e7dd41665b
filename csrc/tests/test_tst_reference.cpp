// ctest: the blocked online-softmax reference against a naive float64 softmax(q k^T * scale) v that
// stores the whole score matrix, plus the fp16 bit conversions the fp16 path relies on.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "half_bits.h"
#include "tst_attention_reference.h"

namespace {

using spgim::tst::AttentionShape;

int g_failures = 0;

void check(bool ok, const char* what, const AttentionShape& s, double error = 0.0, double tolerance = 0.0) {
  if (!ok) {
    ++g_failures;
    std::printf("FAIL %s B=%lld N=%lld M=%lld d=%lld dv=%lld error=%.3g tolerance=%.3g\n", what,
                static_cast<long long>(s.batch), static_cast<long long>(s.queries), static_cast<long long>(s.keys),
                static_cast<long long>(s.head_dim), static_cast<long long>(s.value_dim), error, tolerance);
  }
}

std::vector<double> naive_attention(const std::vector<double>& q, const std::vector<double>& k,
                                    const std::vector<double>& v, const AttentionShape& s, double scale) {
  const std::int64_t n = s.queries, m = s.keys, d = s.head_dim, dv = s.value_dim;
  std::vector<double> out(static_cast<std::size_t>(s.batch * n * dv), 0.0);
  std::vector<double> p(static_cast<std::size_t>(m));
  for (std::int64_t b = 0; b < s.batch; ++b) {
    for (std::int64_t i = 0; i < n; ++i) {
      const double* qi = &q[static_cast<std::size_t>((b * n + i) * d)];
      double max = -std::numeric_limits<double>::infinity();
      for (std::int64_t j = 0; j < m; ++j) {
        const double* kj = &k[static_cast<std::size_t>((b * m + j) * d)];
        double dot = 0.0;
        for (std::int64_t c = 0; c < d; ++c) {
          dot += qi[c] * kj[c];
        }
        p[static_cast<std::size_t>(j)] = dot * scale;
        max = std::max(max, dot * scale);
      }
      double sum = 0.0;
      for (double& x : p) {
        x = std::exp(x - max);
        sum += x;
      }
      double* oi = &out[static_cast<std::size_t>((b * n + i) * dv)];
      for (std::int64_t j = 0; j < m; ++j) {
        const double* vj = &v[static_cast<std::size_t>((b * m + j) * dv)];
        for (std::int64_t c = 0; c < dv; ++c) {
          oi[c] += p[static_cast<std::size_t>(j)] / sum * vj[c];
        }
      }
    }
  }
  return out;
}

struct Case {
  AttentionShape shape;
  double input_std;  // Large values give logits in the thousands: the softmax must not overflow.
  double scale;
};

struct Inputs {
  std::vector<float> q, k, v;
};

Inputs random_inputs(const Case& c, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, static_cast<float>(c.input_std));
  std::normal_distribution<float> values(0.0f, 1.0f);
  const AttentionShape& s = c.shape;
  Inputs in{std::vector<float>(static_cast<std::size_t>(s.batch * s.queries * s.head_dim)),
            std::vector<float>(static_cast<std::size_t>(s.batch * s.keys * s.head_dim)),
            std::vector<float>(static_cast<std::size_t>(s.batch * s.keys * s.value_dim))};
  for (float& x : in.q) x = normal(rng);
  for (float& x : in.k) x = normal(rng);
  for (float& x : in.v) x = values(rng);
  return in;
}

template <typename T>
std::vector<double> widen(const std::vector<T>& x) {
  return std::vector<double>(x.begin(), x.end());
}

// Largest |a - b| / (atol + rtol * |b|): <= 1 passes.
template <typename A>
double normalized_error(const std::vector<A>& got, const std::vector<double>& want, double atol, double rtol) {
  double worst = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double err = std::abs(static_cast<double>(got[i]) - want[i]) / (atol + rtol * std::abs(want[i]));
    worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(worst, err);
  }
  return worst;
}

void test_float_and_double(const Case& c, std::mt19937& rng) {
  const AttentionShape& s = c.shape;
  const Inputs in = random_inputs(c, rng);
  const std::vector<double> want = naive_attention(widen(in.q), widen(in.k), widen(in.v), s, c.scale);

  std::vector<float> got(want.size());
  spgim::tst::attention_reference(in.q.data(), in.k.data(), in.v.data(), got.data(), s, static_cast<float>(c.scale));
  // fp32 logits carry a relative error of ~1e-7 of their magnitude; large logits amplify it.
  const double logit_scale = c.input_std * c.input_std * c.scale * std::sqrt(static_cast<double>(s.head_dim));
  const double float_tol = 2e-6 * std::max(1.0, logit_scale);
  const double float_err = normalized_error(got, want, float_tol, float_tol);
  check(float_err <= 1.0, "float reference vs naive float64", s, float_err * float_tol, float_tol);

  std::vector<double> got64(want.size());
  spgim::tst::attention_reference(widen(in.q).data(), widen(in.k).data(), widen(in.v).data(), got64.data(), s,
                                  c.scale);
  const double double_err = normalized_error(got64, want, 1e-12, 1e-12);
  check(double_err <= 1.0, "float64 reference vs naive float64", s, double_err * 1e-12, 1e-12);

  std::vector<float> single_thread(want.size());
  spgim::tst::attention_reference(in.q.data(), in.k.data(), in.v.data(), single_thread.data(), s,
                                  static_cast<float>(c.scale), 1);
  std::vector<float> many_threads(want.size());
  spgim::tst::attention_reference(in.q.data(), in.k.data(), in.v.data(), many_threads.data(), s,
                                  static_cast<float>(c.scale), 3);
  check(single_thread == many_threads && single_thread == got, "result independent of thread count", s);
}

std::vector<std::uint16_t> to_half(const std::vector<float>& x) {
  std::vector<std::uint16_t> h(x.size());
  std::transform(x.begin(), x.end(), h.begin(), spgim::tst::float_to_half_bits);
  return h;
}

std::vector<double> half_to_double(const std::vector<std::uint16_t>& h) {
  std::vector<double> x(h.size());
  std::transform(h.begin(), h.end(), x.begin(), [](std::uint16_t b) { return spgim::tst::half_bits_to_float(b); });
  return x;
}

void test_half(const Case& c, std::mt19937& rng) {
  const AttentionShape& s = c.shape;
  const Inputs in = random_inputs(c, rng);
  const std::vector<std::uint16_t> q = to_half(in.q), k = to_half(in.k), v = to_half(in.v);
  const std::vector<double> want = naive_attention(half_to_double(q), half_to_double(k), half_to_double(v), s, c.scale);
  std::vector<std::uint16_t> got(want.size());
  spgim::tst::attention_reference_half(q.data(), k.data(), v.data(), got.data(), s, static_cast<float>(c.scale));
  // The output rounding to fp16 (2^-11 relative) dominates.
  const double err = normalized_error(half_to_double(got), want, 1e-5, 6e-4);
  check(err <= 1.0, "fp16 reference vs naive float64", s, err, 1.0);
}

void test_half_bits() {
  const AttentionShape none{0, 0, 0, 0, 0};
  for (std::uint32_t bits = 0; bits <= 0xffffu; ++bits) {
    const auto h = static_cast<std::uint16_t>(bits);
    const float f = spgim::tst::half_bits_to_float(h);
    const std::uint16_t back = spgim::tst::float_to_half_bits(f);
    const bool nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0;
    check(nan ? (std::isnan(f) && (back & 0x7e00u) == 0x7e00u) : back == h, "half -> float -> half round trip", none);
  }
  check(spgim::tst::float_to_half_bits(65504.0f) == 0x7bffu, "65504 is the largest half", none);
  check(spgim::tst::float_to_half_bits(65520.0f) == 0x7c00u, "65520 rounds to infinity", none);
  check(spgim::tst::float_to_half_bits(std::ldexp(1.0f, -25)) == 0u, "2^-25 ties to zero", none);
  check(spgim::tst::float_to_half_bits(std::ldexp(1.5f, -25)) == 1u, "1.5 * 2^-25 rounds up", none);
  check(spgim::tst::float_to_half_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3c00u, "1 + 2^-11 ties to even", none);
#if defined(__FLT16_MAX__)
  // Where the compiler has a native half type, hold the conversion to it bit for bit.
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> any;
  for (int i = 0; i < 1000000; ++i) {
    std::uint32_t fbits = any(rng);
    float f = 0.0f;
    std::memcpy(&f, &fbits, sizeof f);
    if (std::isnan(f)) continue;
    const _Float16 native = static_cast<_Float16>(f);
    std::uint16_t native_bits = 0;
    std::memcpy(&native_bits, &native, sizeof native_bits);
    check(spgim::tst::float_to_half_bits(f) == native_bits, "float -> half matches _Float16", none);
  }
#endif
}

void test_rejects_bad_shapes() {
  const float x = 0.0f;
  float out = 0.0f;
  for (const AttentionShape& s : {AttentionShape{1, 1, 0, 1, 1}, AttentionShape{1, 1, 1, 0, 1},
                                  AttentionShape{-1, 1, 1, 1, 1}}) {
    bool threw = false;
    try {
      spgim::tst::attention_reference(&x, &x, &x, &out, s, 1.0f);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    check(threw, "invalid shape throws std::invalid_argument", s);
  }
}

}  // namespace

int main() {
  std::mt19937 rng(1234);
  const std::vector<Case> cases = {
      {{1, 1, 1, 1, 1}, 1.0, 1.0},
      {{2, 37, 53, 8, 5}, 1.0, 1.0 / std::sqrt(8.0)},
      {{1, 100, 130, 64, 64}, 1.0, 0.125},
      {{3, 65, 200, 17, 33}, 1.0, 0.3},
      {{1, 33, 1, 4, 16}, 1.0, 0.5},
      {{2, 31, 129, 256, 200}, 1.0, 0.0625},
      {{1, 70, 300, 32, 48}, 1.0, 0.0},
      {{2, 45, 150, 64, 40}, 4.0, 0.125},    // logits ~ +-50: softmax neither flat nor one-hot
      {{2, 45, 150, 16, 16}, 30.0, 1.0},     // logits ~ +-3600
      {{1, 64, 64, 64, 64}, 100.0, 0.125},  // logits ~ +-1e4
  };
  for (const Case& c : cases) {
    test_float_and_double(c, rng);
    test_half(c, rng);
  }
  test_half_bits();
  test_rejects_bad_shapes();
  if (g_failures != 0) {
    std::printf("%d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("all TST attention reference checks passed\n");
  return 0;
}
