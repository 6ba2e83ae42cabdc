// Helpers for the linear-attention tests: random problems with every optional input, and
// running them through the public API.
#pragma once

#include <optional>

#include "subq/linear.h"
#include "tests/test_util.h"

namespace subq::test {

enum class Gate { kNone, kScalar, kConstant, kKeyDim };

struct LinearCase {
  int64_t B = 2, T = 37, Hk = 2, H = 2, K = 16, V = 16;
  Gate gate = Gate::kNone;
  bool gv = false, normalize = false, h0 = false, v_first = false, causal = true;
  double gate_sigma = 1.0;  // log gates are logsigmoid(N(0, sigma^2))
  DType dt = DType::kF32;
  uint64_t seed = 1;
};

inline Tensor log_gates(const std::vector<int64_t>& shape, double sigma, uint64_t seed,
                        DType dt = DType::kF32) {
  Tensor t = Tensor::empty(shape, DType::kF64);
  Rng rng(seed);
  double* p = t.data_as<double>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double x = sigma * rng.normal();
    p[i] = x > 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x));  // logsigmoid(x)
  }
  return Tensor::copy_of(t, dt);
}

// Inputs, options and upstream gradients of one problem.
struct LinearProblem {
  LinearCase c;
  Tensor q, k, v, g, gk, gv, h0, z0, dout, dht, dzt;
  Tensor gamma;
  LinearAttentionOptions opt;
  int64_t N;  // sequences

  explicit LinearProblem(const LinearCase& cs, int64_t nseq = -1) : c(cs) {
    N = nseq > 0 ? nseq : c.B;
    q = randn({c.B, c.T, c.Hk, c.K}, c.dt, c.seed, 0.5);
    k = randn({c.B, c.T, c.Hk, c.K}, c.dt, c.seed + 1, 0.5);
    v = randn({c.B, c.T, c.H, c.V}, c.dt, c.seed + 2);
    if (c.normalize) {  // positive features, as a feature map would give
      for (Tensor* t : {&q, &k}) {
        Tensor f = Tensor::copy_of(*t, DType::kF64);
        double* p = f.data_as<double>();
        for (int64_t i = 0; i < f.numel(); ++i) p[i] = std::exp(p[i]);
        copy_into(f, *t);
      }
    }
    dout = randn({c.B, c.T, c.H, c.V}, c.dt, c.seed + 3);
    // Gates and states are f32 (f64 for float64 reference checks).
    const DType fdt = c.dt == DType::kF64 ? DType::kF64 : DType::kF32;
    opt.normalize = c.normalize;
    opt.causal = c.causal;
    opt.state_v_first = c.v_first;
    switch (c.gate) {
      case Gate::kScalar:
        g = log_gates({c.B, c.T, c.H}, c.gate_sigma, c.seed + 4, fdt);
        opt.g = g;
        break;
      case Gate::kConstant:
        gamma = log_gates({c.H}, c.gate_sigma, c.seed + 4, fdt);
        opt.g_gamma = gamma;
        break;
      case Gate::kKeyDim:
        gk = log_gates({c.B, c.T, c.H, c.K}, c.gate_sigma, c.seed + 4, fdt);
        opt.gk = gk;
        break;
      case Gate::kNone:
        break;
    }
    if (c.gv) {
      gv = log_gates({c.B, c.T, c.H, c.V}, c.gate_sigma, c.seed + 5, fdt);
      opt.gv = gv;
    }
    const std::vector<int64_t> sshape =
        c.v_first ? std::vector<int64_t>{N, c.H, c.V, c.K} : std::vector<int64_t>{N, c.H, c.K, c.V};
    if (c.h0) {
      h0 = randn(sshape, fdt, c.seed + 6, 0.5);
      opt.initial_state = h0;
      if (c.normalize) {
        z0 = Tensor::empty({N, c.H, c.K}, fdt);
        fill_uniform(z0, c.seed + 7, 0.5, 1.5);
        opt.initial_z = z0;
      }
    }
    dht = randn(sshape, fdt, c.seed + 8);
    if (c.normalize) dzt = randn({N, c.H, c.K}, fdt, c.seed + 9);
  }

  std::vector<int64_t> state_shape() const { return dht.sizes(); }
};

struct LinearResult {
  Tensor out, ht, zt;
};

inline LinearResult run_forward(const LinearProblem& p, LinearAttentionOptions opt) {
  LinearResult r;
  const DType odt = p.q.dtype() == DType::kF64 ? DType::kF64 : p.q.dtype();
  r.out = Tensor::zeros(p.v.sizes(), odt);  // varlen rows outside every sequence are not written
  const DType sdt = p.dht.dtype();
  r.ht = Tensor::empty(p.state_shape(), sdt);
  if (p.c.normalize) r.zt = Tensor::empty({p.N, p.c.H, p.c.K}, sdt);
  linear_attention_forward(p.q, p.k, p.v, r.out, r.ht, r.zt, opt);
  return r;
}

struct LinearGradTensors {
  Tensor dq, dk, dv, dg, dg_gamma, dgk, dgv, dh0, dz0;
};

inline LinearGradTensors run_backward(const LinearProblem& p, LinearAttentionOptions opt,
                                      bool with_dht = true) {
  LinearGradTensors t;
  const DType gdt = p.q.dtype(), sdt = p.dht.dtype();
  t.dq = Tensor::empty(p.q.sizes(), gdt);
  t.dk = Tensor::empty(p.k.sizes(), gdt);
  t.dv = Tensor::empty(p.v.sizes(), gdt);
  LinearAttentionGrads g;
  g.dq = t.dq;
  g.dk = t.dk;
  g.dv = t.dv;
  if (p.g.defined()) g.dg = t.dg = Tensor::empty(p.g.sizes(), sdt);
  if (p.gamma.defined()) g.dg_gamma = t.dg_gamma = Tensor::empty(p.gamma.sizes(), sdt);
  if (p.gk.defined()) g.dgk = t.dgk = Tensor::empty(p.gk.sizes(), sdt);
  if (p.gv.defined()) g.dgv = t.dgv = Tensor::empty(p.gv.sizes(), sdt);
  if (p.c.causal) g.dh0 = t.dh0 = Tensor::empty(p.state_shape(), sdt);
  if (p.c.normalize && p.c.causal) g.dz0 = t.dz0 = Tensor::empty({p.N, p.c.H, p.c.K}, sdt);
  linear_attention_backward(p.q, p.k, p.v, p.dout, with_dht ? p.dht : Tensor(),
                            with_dht ? p.dzt : Tensor(), g, opt);
  return t;
}

}  // namespace subq::test
