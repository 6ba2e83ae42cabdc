#include "cli/check.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "subq/backend.h"
#include "subq/conv.h"
#include "subq/error.h"
#include "subq/feature_maps.h"
#include "subq/flash.h"
#include "subq/hybrid.h"
#include "subq/linear.h"
#include "subq/random.h"
#include "subq/threads.h"

namespace subq::cli {

namespace {

Tensor randn(const std::vector<int64_t>& shape, DType dt, uint64_t seed, double stddev = 1.0) {
  Tensor t = Tensor::empty(shape, dt);
  fill_normal(t, seed, 0.0, stddev);
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
  // Linear attention: every form and gate, forward and backward, against the reference.
  struct LinearCheck {
    const char* op;
    const char* detail;
    int gate;  // 0 none, 1 g, 2 g_gamma, 3 gk
    bool normalize, causal;
  };
  for (const LinearCheck& lc :
       {LinearCheck{"linear_attention", "chunk/recurrent/parallel, state", 0, false, true},
        LinearCheck{"linear_attention", "normalized, chunk/recurrent/parallel", 0, true, true},
        LinearCheck{"linear_attention", "non-causal, normalized", 0, true, false},
        LinearCheck{"simple_gla", "g, chunk/recurrent/parallel, GQA", 1, false, true},
        LinearCheck{"simple_gla", "g_gamma (RetNet)", 2, false, true},
        LinearCheck{"gla", "gk, chunk/recurrent/parallel", 3, false, true}}) {
    checks.push_back({lc.op, lc.detail, 1e-5, [lc](uint64_t s) {
                        const int64_t B = 2, T = 90, Hk = 1, H = 2, K = 24, V = 20;
                        Tensor q = randn({B, T, Hk, K}, DType::kF32, s),
                               k = randn({B, T, Hk, K}, DType::kF32, s + 1);
                        Tensor v = randn({B, T, H, V}, DType::kF32, s + 2),
                               dout = randn({B, T, H, V}, DType::kF32, s + 3);
                        if (lc.normalize) {  // positive features
                          fill_uniform(q, s, 0.1, 1.0);
                          fill_uniform(k, s + 1, 0.1, 1.0);
                        }
                        LinearAttentionOptions o;
                        o.normalize = lc.normalize;
                        o.causal = lc.causal;
                        Tensor g = Tensor::empty({B, T, H}, DType::kF32), gamma = retnet_g_gamma(H);
                        Tensor gk = Tensor::empty({B, T, H, K}, DType::kF32);
                        fill_uniform(g, s + 4, -1.0, -0.01);
                        fill_uniform(gk, s + 5, -1.0, -0.01);
                        if (lc.gate == 1) o.g = g;
                        if (lc.gate == 2) o.g_gamma = gamma;
                        if (lc.gate == 3) o.gk = gk;
                        Tensor h0 = randn({B, H, K, V}, DType::kF32, s + 6, 0.3);
                        if (lc.causal) o.initial_state = h0;
                        double worst = 0;
                        auto run = [&](LinearAttentionOptions oo, Tensor& out, Tensor& ht,
                                       Tensor& dq) {
                          out = Tensor::empty(v.sizes(), DType::kF32);
                          ht = Tensor::empty({B, H, K, V}, DType::kF32);
                          linear_attention_forward(q, k, v, out, ht, {}, oo);
                          dq = Tensor::empty(q.sizes(), DType::kF32);
                          Tensor dk = Tensor::empty(k.sizes(), DType::kF32),
                                 dv = Tensor::empty(v.sizes(), DType::kF32);
                          LinearAttentionGrads gr;
                          gr.dq = dq;
                          gr.dk = dk;
                          gr.dv = dv;
                          linear_attention_backward(q, k, v, dout, {}, {}, gr, oo);
                        };
                        LinearAttentionOptions ro = o;
                        ro.impl = Impl::kRef;
                        Tensor ro_out, ro_ht, ro_dq;
                        run(ro, ro_out, ro_ht, ro_dq);
                        for (LinearMode m :
                             {LinearMode::kChunk, LinearMode::kRecurrent, LinearMode::kParallel}) {
                          LinearAttentionOptions fo = o;
                          fo.mode = m;
                          Tensor out, ht, dq;
                          run(fo, out, ht, dq);
                          worst = std::max({worst, rel_err(out, ro_out), rel_err(dq, ro_dq),
                                            lc.causal ? rel_err(ht, ro_ht) : 0.0});
                        }
                        return worst;
                      }});
  }
  checks.push_back(
      {"short_conv", "width 4, SiLU, state, backward", 1e-5, [](uint64_t s) {
         Tensor x = randn({2, 300, 40}, DType::kF32, s), w = randn({40, 4}, DType::kF32, s + 1);
         Tensor b = randn({40}, DType::kF32, s + 2), h0 = randn({2, 3, 40}, DType::kF32, s + 3);
         Tensor dy = randn({2, 300, 40}, DType::kF32, s + 4);
         ShortConvOptions o;
         o.silu = true;
         o.bias = b;
         o.initial_state = h0;
         double worst = 0;
         Tensor y[2], dx[2], dw[2];
         for (int i = 0; i < 2; ++i) {
           o.impl = i ? Impl::kRef : Impl::kFast;
           y[i] = Tensor::empty(x.sizes(), DType::kF32);
           short_conv_forward(x, w, y[i], {}, o);
           dx[i] = Tensor::empty(x.sizes(), DType::kF32);
           dw[i] = Tensor::empty(w.sizes(), DType::kF32);
           ShortConvGrads g;
           g.dx = dx[i];
           g.dweight = dw[i];
           short_conv_backward(x, w, dy, {}, g, o);
         }
         worst = std::max({rel_err(y[0], y[1]), rel_err(dx[0], dx[1]), rel_err(dw[0], dw[1])});
         return worst;
       }});
  for (FeatureMap m : {FeatureMap::kIdentity, FeatureMap::kElu1, FeatureMap::kRelu,
                       FeatureMap::kT2R, FeatureMap::kHedgehog, FeatureMap::kTaylor,
                       FeatureMap::kPerformer, FeatureMap::kCosformer, FeatureMap::kDpfp}) {
    checks.push_back(
        {"feature_map", std::string(feature_map_name(m)) + ", backward", 1e-5, [m](uint64_t s) {
           const int64_t B = 2, T = 20, H = 2, d = 8;
           Tensor x = randn({B, T, H, d}, DType::kF32, s);
           FeatureMapOptions o;
           o.map = m;
           o.dpfp_nu = 2;
           Tensor w, b;
           if (m == FeatureMap::kT2R)
             w = randn({H, 6, d}, DType::kF32, s + 1), b = randn({H, 6}, DType::kF32, s + 2);
           if (m == FeatureMap::kHedgehog) w = randn({H, d, 6}, DType::kF32, s + 1);
           if (m == FeatureMap::kPerformer) w = performer_projection(H, 16, d, s);
           o.weight = w;
           o.bias = b;
           const int64_t n = feature_map_dim(o, d);
           Tensor dy = randn({B, T, H, n}, DType::kF32, s + 3);
           Tensor y[2], dx[2];
           for (int i = 0; i < 2; ++i) {
             o.impl = i ? Impl::kRef : Impl::kFast;
             y[i] = Tensor::empty({B, T, H, n}, DType::kF32);
             feature_map_forward(x, y[i], o);
             dx[i] = Tensor::empty(x.sizes(), DType::kF32);
             FeatureMapGrads g;
             g.dx = dx[i];
             feature_map_backward(x, dy, g, o);
           }
           return std::max(rel_err(y[0], y[1]), rel_err(dx[0], dx[1]));
         }});
  }
  checks.push_back(
      {"hybrid", "window 16, gate, meta tokens, backward, decode", 1e-5, [](uint64_t s) {
         const int64_t B = 2, T = 80, H = 2, d = 16, f = 16, dv = 12;
         Tensor q = randn({B, T, H, d}, DType::kF32, s),
                k = randn({B, T, H, d}, DType::kF32, s + 1);
         Tensor fq = Tensor::empty({B, T, H, f}, DType::kF32),
                fk = Tensor::empty({B, T, H, f}, DType::kF32);
         fill_uniform(fq, s + 2, 0.1, 1.0);
         fill_uniform(fk, s + 3, 0.1, 1.0);
         Tensor v = randn({B, T, H, dv}, DType::kF32, s + 4),
                dout = randn({B, T, H, dv}, DType::kF32, s + 5);
         Tensor wf = randn({H}, DType::kF32, s + 6), g = Tensor::empty({B, T, H}, DType::kF32);
         fill_uniform(g, s + 7, -0.5, -0.01);
         Tensor mk = randn({H, 3, d}, DType::kF32, s + 8),
                mv = randn({H, 3, dv}, DType::kF32, s + 9);
         HybridOptions o;
         o.window = 16;
         o.window_factor = wf;
         o.g = g;
         o.meta_k = mk;
         o.meta_v = mv;
         Tensor y[2], dq[2];
         for (int i = 0; i < 2; ++i) {
           o.impl = i ? Impl::kRef : Impl::kFast;
           y[i] = Tensor::empty(v.sizes(), DType::kF32);
           hybrid_attention_forward(q, k, fq, fk, v, y[i], o);
           HybridGrads gr;
           gr.dq = dq[i] = Tensor::empty(q.sizes(), DType::kF32);
           Tensor dk = Tensor::empty(q.sizes(), DType::kF32),
                  dfq = Tensor::empty(fq.sizes(), DType::kF32);
           Tensor dfk = Tensor::empty(fq.sizes(), DType::kF32),
                  dv = Tensor::empty(v.sizes(), DType::kF32);
           gr.dk = dk;
           gr.dfq = dfq;
           gr.dfk = dfk;
           gr.dv = dv;
           hybrid_attention_backward(q, k, fq, fk, v, dout, gr, o);
         }
         double worst = std::max(rel_err(y[0], y[1]), rel_err(dq[0], dq[1]));
         // Decode the last 10 tokens against the forward.
         HybridOptions fo = o;
         fo.impl = Impl::kFast;
         HybridCache cache = HybridCache::create(B, H, d, f, dv, 16);
         hybrid_cache_prefill(k.view().narrow(1, 0, T - 10), fk.view().narrow(1, 0, T - 10),
                              v.view().narrow(1, 0, T - 10), g.view().narrow(1, 0, T - 10), cache,
                              fo);
         for (int64_t t = T - 10; t < T; ++t) {
           Tensor out = Tensor::empty({B, 1, H, dv}, DType::kF32);
           hybrid_attention_step(q.view().narrow(1, t, 1), k.view().narrow(1, t, 1),
                                 fq.view().narrow(1, t, 1), fk.view().narrow(1, t, 1),
                                 v.view().narrow(1, t, 1), g.view().narrow(1, t, 1), cache, out,
                                 fo);
           worst = std::max(worst, rel_err(out, y[0].view().narrow(1, t, 1)));
         }
         return worst;
       }});
  return checks;
}

}  // namespace

int run_check(const CheckConfig& cfg) {
  if (cfg.threads != 0) {
    SUBQ_CHECK_ARG(cfg.threads >= 1 && cfg.threads <= max_threads(), "subq check", "--threads",
                   detail::concat("in [1, ", max_threads(), "]"), cfg.threads);
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
