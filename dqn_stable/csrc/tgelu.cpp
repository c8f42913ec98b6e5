// tGELU's value and slope in one pass over a float32 CPU tensor, eight lanes at a time (AVX2+FMA).
//
// The same arithmetic as dqn_stable/activations.py (_tgelu_value_and_slope): with z the distance
// into the active piece and Phi the standard normal CDF, the value is offset + z * weight, where
// weight is Phi(|z|) inside [tl, tr] and 1 - Phi(|z|) outside, and the slope is
// weight +- |z| phi(z). The normal tail and exp are written here for eight lanes (SLEEF's erfc,
// which libtorch_cpu exports, measured 15x slower in this loop); one exp gives both the tail and
// the density.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cmath>

namespace {

static inline __m256 exp8(__m256 x) {
  // exp(x) = 2^n * exp(r), r = x - n ln2, |r| <= ln2/2; Cephes-style polynomial
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-103.0f);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n in two halves so that n down to -150 gives subnormals/zero without overflowing the exponent
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
  __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
  __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  return _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LE_OQ), y);  // exactly 0 far below
}

constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

// 1 - Phi(a) for a >= 0 as exp(-a^2 / 2) * N(a) / D(a), Hart's rational approximation (algorithm
// 5666, as given by G. West, "Better approximations to cumulative normal functions", 2005):
// relative error below 3e-9 for a < 7.07 in exact arithmetic, and beyond that a tail under 1e-12.
// All coefficients are positive, so Horner's rule does not cancel for a >= 0. The density
// phi(a) = exp(-a^2 / 2) / sqrt(2 pi) is what the slope needs: one exp serves both (*pdf).
static inline __m256 upper_tail8(__m256 a, __m256* pdf) {
  static constexpr float kNum[] = {3.52624965998911e-02f, 0.700383064443688f, 6.37396220353165f,
                                   33.912866078383f, 112.079291497871f, 221.213596169931f,
                                   220.206867912376f};
  static constexpr float kDen[] = {8.83883476483184e-02f, 1.75566716318264f, 16.064177579207f,
                                   86.7807322029461f, 296.564248779674f, 637.333633378831f,
                                   793.826512519948f, 440.413735824752f};
  __m256 num = _mm256_set1_ps(kNum[0]);
  for (int k = 1; k < 7; ++k) num = _mm256_fmadd_ps(num, a, _mm256_set1_ps(kNum[k]));
  __m256 den = _mm256_set1_ps(kDen[0]);
  for (int k = 1; k < 8; ++k) den = _mm256_fmadd_ps(den, a, _mm256_set1_ps(kDen[k]));
  __m256 gauss = exp8(_mm256_mul_ps(_mm256_mul_ps(a, a), _mm256_set1_ps(-0.5f)));
  *pdf = _mm256_mul_ps(gauss, _mm256_set1_ps(kInvSqrt2Pi));
  return _mm256_div_ps(_mm256_mul_ps(gauss, num), den);
}

constexpr float kTailClamp = 40.0f;

struct Consts {
  __m256 tl, tr, right, left, lo, hi, zero, one, abs_mask;
};

inline void block(const Consts& c, __m256 x, __m256* y_out, __m256* slope_out, bool with_slope) {
  // _mm256_max_ps(a, b) returns b when either is NaN: put x second so NaN reaches `window`
  __m256 window = _mm256_min_ps(c.tr, _mm256_max_ps(c.tl, x));
  __m256 excess = _mm256_sub_ps(x, window);
  excess = _mm256_min_ps(c.hi, _mm256_max_ps(c.lo, excess));
  __m256 above = _mm256_cmp_ps(excess, c.zero, _CMP_GT_OQ);
  __m256 below = _mm256_cmp_ps(excess, c.zero, _CMP_LT_OQ);
  __m256 outside = _mm256_or_ps(above, below);
  __m256 z = _mm256_blendv_ps(window, excess, outside);
  __m256 a = _mm256_and_ps(z, c.abs_mask);
  __m256 pdf;
  __m256 tail = upper_tail8(a, &pdf);
  __m256 weight = _mm256_blendv_ps(_mm256_sub_ps(c.one, tail), tail, outside);
  __m256 offset = _mm256_or_ps(_mm256_and_ps(above, c.right), _mm256_and_ps(below, c.left));
  __m256 nan_lanes = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  *y_out = _mm256_blendv_ps(_mm256_fmadd_ps(z, weight, offset), x, nan_lanes);
  if (with_slope) {
    __m256 a_pdf = _mm256_mul_ps(a, pdf);
    __m256 slope = _mm256_blendv_ps(_mm256_add_ps(weight, a_pdf), _mm256_sub_ps(weight, a_pdf), outside);
    *slope_out = _mm256_blendv_ps(slope, x, nan_lanes);
  }
}

std::vector<torch::Tensor> value_and_slope(torch::Tensor x, double tl, double tr, double right,
                                           double left, bool with_slope) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32,
              "tgelu kernel: float32 CPU tensors only");
  x = x.contiguous();
  auto y = torch::empty_like(x);
  auto slope = with_slope ? torch::empty_like(x) : torch::Tensor();
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  float* sp = with_slope ? slope.data_ptr<float>() : nullptr;
  const int64_t n = x.numel();
  Consts c{_mm256_set1_ps((float)tl), _mm256_set1_ps((float)tr), _mm256_set1_ps((float)right),
           _mm256_set1_ps((float)left), _mm256_set1_ps(-kTailClamp), _mm256_set1_ps(kTailClamp),
           _mm256_setzero_ps(), _mm256_set1_ps(1.0f), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))};
  at::parallel_for(0, (n + 7) / 8, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t i = b * 8;
      __m256 yv, sv;
      if (i + 8 <= n) {
        block(c, _mm256_loadu_ps(xp + i), &yv, &sv, with_slope);
        _mm256_storeu_ps(yp + i, yv);
        if (with_slope) _mm256_storeu_ps(sp + i, sv);
      } else {  // the last, partial block goes through a padded copy
        alignas(32) float in[8] = {0, 0, 0, 0, 0, 0, 0, 0}, out[8], out_slope[8];
        const int64_t m = n - i;
        for (int64_t k = 0; k < m; ++k) in[k] = xp[i + k];
        block(c, _mm256_load_ps(in), &yv, &sv, with_slope);
        _mm256_store_ps(out, yv);
        if (with_slope) _mm256_store_ps(out_slope, sv);
        for (int64_t k = 0; k < m; ++k) {
          yp[i + k] = out[k];
          if (with_slope) sp[i + k] = out_slope[k];
        }
      }
    }
  });
  if (with_slope) return {y, slope};
  return {y};
}

// tGELU with its backward in C++ too: a Python autograd.Function costs more per call than the
// kernel itself on a (256, 128) batch. The backward multiplies by the slope saved in the forward
// pass, with grad mode off, so the result never carries a graph: a second derivative is refused
// (as torch.autograd.function.once_differentiable does), never silently wrong.
class TGELUFunction : public torch::autograd::Function<TGELUFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, double tl,
                               double tr, double right, double left) {
    auto out = value_and_slope(x, tl, tr, right, left, true);
    ctx->save_for_backward({out[1]});
    return out[0];
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    torch::NoGradGuard no_grad;
    auto slope = ctx->get_saved_variables()[0];
    return {grads[0] * slope, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

torch::Tensor tgelu_autograd(torch::Tensor x, double tl, double tr, double right, double left) {
  return TGELUFunction::apply(x, tl, tr, right, left);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("tgelu", &tgelu_autograd, "tGELU of a float32 CPU tensor, differentiable once");
  m.def("value_and_slope", &value_and_slope, "tGELU value (and slope) of a float32 CPU tensor");
}
