#include "cli/check.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "subq/backend.h"
#include "subq/error.h"
#include "subq/flash.h"
#include "subq/random.h"
#include "subq/threads.h"

namespace subq::cli {

namespace {

Tensor randn(const std::vector<int64_t>& shape, DType dt, uint64_t seed) {
  Tensor t = Tensor::empty(shape, dt);
  fill_normal(t, seed);
  return t;
}

// RMS(a - b) / RMS(b) over all elements; a non-finite value where b is finite counts as a
// failure (returns +inf). Matching infinities (lse of fully masked rows) are skipped.
double rel_err(const TensorView& a, const TensorView& b) {
  Tensor x = Tensor::copy_of(a, DType::kF64), y = Tensor::copy_of(b, DType::kF64);
  const double *p = x.data_as<double>(), *r = y.data_as<double>();
  double num = 0, den = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (std::isinf(r[i]) && p[i] == r[i]) continue;
    if (!std::isfinite(p[i])) return INFINITY;
    num += (p[i] - r[i]) * (p[i] - r[i]);
    den += r[i] * r[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

struct Check {
  std::string op, detail;
  double tol;
  std::function<double(uint64_t seed)> run;  // returns the error measure
};

std::vector<Check> all_checks() {
  std::vector<Check> checks;
  // Exact attention forward, fp32, with every option in play across a few odd shapes.
  checks.push_back({"flash_forward", "f32 causal/window/softcap/alibi/GQA", 1e-5, [](uint64_t s) {
                      double worst = 0;
                      struct Shape {
                        int64_t Tq, Tk, H, Hkv, D;
                      };
                      for (auto [Tq, Tk, H, Hkv, D] :
                           {Shape{1, 1, 1, 1, 16}, Shape{65, 65, 4, 2, 60},
                            Shape{37, 100, 3, 1, 100}, Shape{130, 130, 2, 2, 128}}) {
                        Tensor q = randn({2, Tq, H, D}, DType::kF32, s);
                        Tensor k = randn({2, Tk, Hkv, D}, DType::kF32, s + 1);
                        Tensor v = randn({2, Tk, Hkv, D}, DType::kF32, s + 2);
                        Tensor slopes = Tensor::empty({H}, DType::kF32);
                        fill(slopes, 0.125);
                        for (int variant = 0; variant < 4; ++variant) {
                          FlashOptions o;
                          o.causal = variant % 2 == 1;
                          if (variant == 2) o.window_left = 16, o.window_right = 3;
                          if (variant == 3) o.softcap = 5.f, o.alibi_slopes = slopes;
                          o.impl = Impl::kFast;
                          FlashOutput f = flash_attention(q, k, v, o);
                          o.impl = Impl::kRef;
                          FlashOutput r = flash_attention(q, k, v, o);
                          worst = std::max({worst, rel_err(f.out, r.out), rel_err(f.lse, r.lse)});
                        }
                      }
                      return worst;
                    }});
  // bf16 inputs: the fast path against the float64 reference on the same inputs.
  checks.push_back({"flash_forward", "bf16 causal", 5e-3, [](uint64_t s) {
                      Tensor q = randn({1, 100, 4, 64}, DType::kBF16, s);
                      Tensor k = randn({1, 100, 2, 64}, DType::kBF16, s + 1);
                      Tensor v = randn({1, 100, 2, 64}, DType::kBF16, s + 2);
                      FlashOptions o;
                      o.causal = true;
                      FlashOutput f = flash_attention(q, k, v, o);
                      o.impl = Impl::kRef;
                      Tensor ro = Tensor::empty({1, 100, 4, 64}, DType::kF32);
                      Tensor rl = Tensor::empty({1, 4, 100}, DType::kF32);
                      flash_attention_forward(q, k, v, ro, rl, o);
                      return rel_err(f.out, ro);
                    }});
  checks.push_back({"flash_forward", "varlen causal", 1e-5, [](uint64_t s) {
                      Tensor q = randn({1, 150, 2, 32}, DType::kF32, s);
                      Tensor k = randn({1, 180, 2, 32}, DType::kF32, s + 1);
                      Tensor v = randn({1, 180, 2, 32}, DType::kF32, s + 2);
                      Tensor cq = Tensor::empty({4}, DType::kI32),
                             ck = Tensor::empty({4}, DType::kI32);
                      const int offq[] = {0, 10, 80, 150}, offk[] = {0, 30, 100, 180};
                      for (int64_t i = 0; i < 4; ++i) {
                        set_element(cq, {i}, offq[i]);
                        set_element(ck, {i}, offk[i]);
                      }
                      FlashOptions o;
                      o.causal = true;
                      o.cu_seqlens_q = cq;
                      o.cu_seqlens_k = ck;
                      FlashOutput f = flash_attention(q, k, v, o);
                      o.impl = Impl::kRef;
                      FlashOutput r = flash_attention(q, k, v, o);
                      return std::max(rel_err(f.out, r.out), rel_err(f.lse, r.lse));
                    }});
  checks.push_back(
      {"flash_backward", "f32 causal GQA softcap alibi", 1e-5, [](uint64_t s) {
         Tensor q = randn({2, 70, 4, 48}, DType::kF32, s);
         Tensor k = randn({2, 90, 2, 48}, DType::kF32, s + 1);
         Tensor v = randn({2, 90, 2, 40}, DType::kF32, s + 2);
         Tensor dout = randn({2, 70, 4, 40}, DType::kF32, s + 3);
         Tensor slopes = Tensor::empty({4}, DType::kF32);
         fill(slopes, 0.25);
         FlashOptions o;
         o.causal = true;
         o.softcap = 4.f;
         o.alibi_slopes = slopes;
         FlashOutput f = flash_attention(q, k, v, o);
         FlashGrads g = flash_attention_grad(q, k, v, f.out, f.lse, dout, o);
         o.impl = Impl::kRef;
         FlashGrads r = flash_attention_grad(q, k, v, f.out, f.lse, dout, o);
         return std::max({rel_err(g.dq, r.dq), rel_err(g.dk, r.dk), rel_err(g.dv, r.dv)});
       }});
  for (bool ring : {false, true}) {
    checks.push_back({"flash_decode", ring ? "f32 ring buffer, window 31" : "f32 GQA, 2 new tokens",
                      1e-5, [ring](uint64_t s) {
                        const int64_t B = 2, C = ring ? 40 : 300, H = 4, Hkv = 2, D = 64, Tn = 2;
                        Tensor q = randn({B, Tn, H, D}, DType::kF32, s);
                        Tensor kc = randn({B, C, Hkv, D}, DType::kF32, s + 1);
                        Tensor vc = randn({B, C, Hkv, D}, DType::kF32, s + 2);
                        Tensor kn = randn({B, Tn, Hkv, D}, DType::kF32, s + 3);
                        Tensor vn = randn({B, Tn, Hkv, D}, DType::kF32, s + 4);
                        Tensor lens = Tensor::empty({B}, DType::kI32);
                        set_element(lens, {0}, ring ? 250 : 100);
                        set_element(lens, {1}, ring ? 7 : 297);
                        FlashDecodeOptions o;
                        o.causal = true;
                        o.ring_buffer = ring;
                        if (ring) o.window_left = 31;
                        Tensor kc2 = Tensor::copy_of(kc), vc2 = Tensor::copy_of(vc);
                        Tensor out = Tensor::empty({B, Tn, H, D}, DType::kF32);
                        Tensor lse = Tensor::empty({B, H, Tn}, DType::kF32);
                        flash_attention_decode(q, kc, vc, lens, kn, vn, out, lse, o);
                        o.impl = Impl::kRef;
                        Tensor rout = Tensor::empty({B, Tn, H, D}, DType::kF32);
                        Tensor rlse = Tensor::empty({B, H, Tn}, DType::kF32);
                        flash_attention_decode(q, kc2, vc2, lens, kn, vn, rout, rlse, o);
                        return std::max({rel_err(out, rout), rel_err(lse, rlse), rel_err(kc, kc2)});
                      }});
  }
  return checks;
}

}  // namespace

int run_check(const CheckConfig& cfg) {
  if (cfg.threads != 0) {
    SUBQ_CHECK_ARG(cfg.threads >= 1, "subq check", "--threads", ">= 1", cfg.threads);
    set_num_threads(cfg.threads);
  }
  std::printf("subq check: fast kernels (%s, %d threads) against float64 references, seed %llu\n",
              simd_target().c_str(), num_threads(), static_cast<unsigned long long>(cfg.seed));
  int failed = 0;
  for (const Check& c : all_checks()) {
    double err;
    std::string note;
    try {
      err = c.run(cfg.seed);
    } catch (const std::exception& e) {
      err = INFINITY;
      note = std::string("  (") + e.what() + ")";
    }
    const bool ok = err <= c.tol;
    failed += !ok;
    std::printf("%s  %-15s %-34s rel_err %.2e  tol %.0e%s\n", ok ? "PASS" : "FAIL", c.op.c_str(),
                c.detail.c_str(), err, c.tol, note.c_str());
  }
  std::printf("%s\n", failed ? "some checks FAILED" : "all checks passed");
  return failed ? 1 : 0;
}

}  // namespace subq::cli
