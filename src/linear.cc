// Public linear-attention entry points: argument validation, then dispatch to the float64
// reference (src/ref) or the fast kernels (src/cpu). Gate values are read and checked (<= 0,
// not NaN) before anything is written.
#include "subq/linear.h"

#include <cmath>

#include "src/checks.h"
#include "src/cpu/linear_cpu.h"
#include "src/linear_args.h"
#include "src/ref/linear_ref.h"
#include "subq/error.h"

namespace subq {

namespace {

using detail::concat;
using detail::GateKind;
using detail::LinearArgs;
using namespace detail::checks;  // NOLINT: the shared argument checks

// Every value of a gate is a log decay: <= 0 (-inf allowed), never NaN. Positive values are
// rejected rather than clamped: a positive log gate means a growing state, which is a bug in
// the caller's gate computation (e.g. a missing logsigmoid), not something to hide.
void check_gate_values(const char* where, const char* name, const TensorView& t) {
  const int r = t.rank();
  std::vector<int64_t> idx(r, 0);
  for (int64_t e = 0; e < t.numel(); ++e) {
    int64_t off = 0;
    for (int i = 0; i < r; ++i) off += idx[i] * t.stride(i);
    const double x = load_at(t, off);
    if (!(x <= 0.0)) {
      std::string at = "[";
      for (int i = 0; i < r; ++i) at += (i ? ", " : "") + std::to_string(idx[i]);
      throw_arg_error(where, name, "log decays <= 0 (-inf allowed)", concat(x, " at ", at, "]"));
    }
    for (int i = r - 1; i >= 0; --i) {
      if (++idx[i] < t.size(i)) break;
      idx[i] = 0;
    }
  }
}

void check_gate(const char* where, const char* name, const TensorView& t,
                const std::vector<int64_t>& shape, bool allow_f64) {
  check_input(where, name, t, static_cast<int>(shape.size()), allow_f64);
  SUBQ_CHECK_ARG(t.sizes() == shape, where, name, shape_str(shape), t.describe());
  check_gate_values(where, name, t);
}

LinearArgs make_args(const char* where, const TensorView& q, const TensorView& k,
                     const TensorView& v, const LinearAttentionOptions& opt) {
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_attention_inputs(where, {{"q", &q}, {"k", &k}, {"v", &v}}, f64);
  LinearArgs a;
  a.q = q;
  a.k = k;
  a.v = v;
  const int64_t B = q.size(0), T = q.size(1);
  a.Hk = q.size(2);
  a.K = q.size(3);
  a.H = v.size(2);
  a.V = v.size(3);
  SUBQ_CHECK_ARG(k.sizes() == q.sizes(), where, "k", concat(shape_str(q.sizes()), " (as q)"),
                 k.describe());
  SUBQ_CHECK_ARG(v.size(0) == B && v.size(1) == T, where, "v",
                 concat("batch ", B, " and length ", T, " (as q)"), v.describe());
  SUBQ_CHECK_ARG(a.H % a.Hk == 0, where, "v",
                 concat("value heads that are a multiple of the ", a.Hk, " key heads"), a.H);
  if (opt.scale) {
    SUBQ_CHECK_ARG(std::isfinite(*opt.scale), where, "scale", "a finite value", *opt.scale);
    a.scale = *opt.scale;
  } else {
    a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.K)));
  }
  a.normalize = opt.normalize;
  SUBQ_CHECK_ARG(std::isfinite(opt.eps) && opt.eps > 0, where, "eps", "a finite value > 0",
                 opt.eps);
  a.eps = opt.eps;
  a.causal = opt.causal;
  a.mode = opt.mode;
  SUBQ_CHECK_ARG(
      opt.chunk_size >= 16 && opt.chunk_size <= 256 && (opt.chunk_size & (opt.chunk_size - 1)) == 0,
      where, "chunk_size", "a power of two from 16 to 256", opt.chunk_size);
  a.chunk = opt.chunk_size;
  a.v_first = opt.state_v_first;

  // Sequences.
  if (opt.cu_seqlens.defined()) {
    SUBQ_CHECK_ARG(B == 1, where, "q", "batch 1 with cu_seqlens (packed [1, sum T, H, K])", B);
    const auto cu = read_cu_seqlens(where, "cu_seqlens", opt.cu_seqlens, T);
    for (size_t n = 0; n + 1 < cu.size(); ++n) a.seqs.push_back({0, cu[n], cu[n + 1] - cu[n]});
    a.varlen = true;
  } else {
    for (int64_t b = 0; b < B; ++b) a.seqs.push_back({b, 0, T});
  }
  const auto N = static_cast<int64_t>(a.seqs.size());

  // Gates.
  const int given = opt.g.defined() + opt.g_gamma.defined() + opt.gk.defined();
  SUBQ_CHECK_ARG(given <= 1, where, "gates", "at most one of g, g_gamma, gk", given, " given");
  if (!opt.causal)
    SUBQ_CHECK_ARG(given == 0 && !opt.gv.defined(), where, "gates",
                   "none with causal = false (one global state)", "a gate");
  if (opt.g.defined()) {
    check_gate(where, "g", opt.g, {B, T, a.H}, f64);
    a.gate = GateKind::kScalar;
    a.g = opt.g;
  } else if (opt.g_gamma.defined()) {
    check_gate(where, "g_gamma", opt.g_gamma, {a.H}, f64);
    a.gate = GateKind::kConstant;
    a.g_gamma = opt.g_gamma;
  } else if (opt.gk.defined()) {
    check_gate(where, "gk", opt.gk, {B, T, a.H, a.K}, f64);
    a.gate = GateKind::kKeyDim;
    a.gk = opt.gk;
  }
  if (opt.gv.defined()) {
    check_gate(where, "gv", opt.gv, {B, T, a.H, a.V}, f64);
    a.has_gv = true;
    a.gv = opt.gv;
  }

  // Initial states.
  const std::vector<int64_t> sshape =
      a.v_first ? std::vector<int64_t>{N, a.H, a.V, a.K} : std::vector<int64_t>{N, a.H, a.K, a.V};
  if (opt.initial_state.defined()) {
    SUBQ_CHECK_ARG(opt.causal, where, "initial_state", "none with causal = false", "a state");
    check_state(where, "initial_state", opt.initial_state, sshape, f64);
    a.h0 = opt.initial_state;
  }
  if (opt.initial_z.defined()) {
    SUBQ_CHECK_ARG(opt.normalize, where, "initial_z", "none unless normalize", "a tensor");
    SUBQ_CHECK_ARG(opt.causal, where, "initial_z", "none with causal = false", "a tensor");
    check_state(where, "initial_z", opt.initial_z, {N, a.H, a.K}, f64);
    a.z0 = opt.initial_z;
  }
  return a;
}

std::vector<int64_t> state_shape(const LinearArgs& a) {
  const auto N = static_cast<int64_t>(a.seqs.size());
  return a.v_first ? std::vector<int64_t>{N, a.H, a.V, a.K}
                   : std::vector<int64_t>{N, a.H, a.K, a.V};
}

void check_state_outputs(const char* where, LinearArgs& a, const TensorView& s, const char* sname,
                         const TensorView& z, const char* zname, bool allow_f64) {
  if (s.defined()) check_state(where, sname, s, state_shape(a), allow_f64);
  if (z.defined()) {
    SUBQ_CHECK_ARG(a.normalize, where, zname, "none unless normalize", "a tensor");
    check_state(where, zname, z, {static_cast<int64_t>(a.seqs.size()), a.H, a.K}, allow_f64);
  }
}

}  // namespace

void linear_attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, const TensorView& final_state,
                              const TensorView& final_z, const LinearAttentionOptions& opt) {
  const char* where = "linear_attention_forward";
  LinearArgs a = make_args(where, q, k, v, opt);
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_output(where, "out", out, v.sizes(), f64);
  check_state_outputs(where, a, final_state, "final_state", final_z, "final_z", f64);
  a.out = out;
  a.ht = final_state;
  a.zt = final_z;
  if (resolve_impl(opt.impl) == Impl::kRef) return ref::linear_forward(a);
  UnitStride uq(a.q, false), uk(a.k, false), uv(a.v, false), uo(a.out, true);
  cpu::linear_forward(a);
  uo.finish();
}

void linear_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& dout, const TensorView& dht, const TensorView& dzt,
                               const LinearAttentionGrads& grads,
                               const LinearAttentionOptions& opt) {
  const char* where = "linear_attention_backward";
  LinearArgs a = make_args(where, q, k, v, opt);
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_output(where, "dout", dout, v.sizes(), f64);
  check_state_outputs(where, a, dht, "dht", dzt, "dzt", f64);
  check_output(where, "dq", grads.dq, q.sizes(), f64);
  check_output(where, "dk", grads.dk, k.sizes(), f64);
  check_output(where, "dv", grads.dv, v.sizes(), f64);
  auto check_grad = [&](const TensorView& d, const char* name, const TensorView& of,
                        const char* of_name) {
    if (!d.defined()) return;
    SUBQ_CHECK_ARG(of.defined(), where, name, concat("none without ", of_name), "a tensor");
    check_output(where, name, d, of.sizes(), f64);
  };
  check_grad(grads.dg, "dg", a.g, "g");
  check_grad(grads.dg_gamma, "dg_gamma", a.g_gamma, "g_gamma");
  check_grad(grads.dgk, "dgk", a.gk, "gk");
  check_grad(grads.dgv, "dgv", a.gv, "gv");
  check_state_outputs(where, a, grads.dh0, "dh0", grads.dz0, "dz0", f64);
  a.dout = dout;
  a.dht = dht;
  a.dzt = dzt;
  a.grads = grads;
  if (resolve_impl(opt.impl) == Impl::kRef) return ref::linear_backward(a);
  UnitStride uq(a.q, false), uk(a.k, false), uv(a.v, false), udo(a.dout, false),
      udq(a.grads.dq, true), udk(a.grads.dk, true), udv(a.grads.dv, true);
  cpu::linear_backward(a);
  udq.finish();
  udk.finish();
  udv.finish();
}

void linear_attention_step(const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& state, const TensorView& z, const TensorView& out,
                           const LinearAttentionOptions& opt) {
  const char* where = "linear_attention_step";
  SUBQ_CHECK_ARG(!opt.cu_seqlens.defined(), where, "cu_seqlens", "none (one token per sequence)",
                 "given");
  SUBQ_CHECK_ARG(opt.causal, where, "causal", "true (a step extends a causal state)", "false");
  SUBQ_CHECK_ARG(!opt.initial_state.defined() && !opt.initial_z.defined(), where, "initial_state",
                 "none (the state argument is read and updated in place)", "given");
  check_input(where, "q", q, 4);
  SUBQ_CHECK_ARG(q.size(1) == 1, where, "q", "one token per sequence ([B, 1, Hk, K])",
                 q.describe());
  LinearAttentionOptions o = opt;
  o.mode = LinearMode::kRecurrent;
  o.initial_state = state;
  if (opt.normalize) o.initial_z = z;
  SUBQ_CHECK_ARG(state.defined(), where, "state", "an f32 state to update", "none");
  if (opt.normalize)
    SUBQ_CHECK_ARG(z.defined(), where, "z", "an f32 [B, H, K] normalizer with normalize", "none");
  linear_attention_forward(q, k, v, out, state, opt.normalize ? z : TensorView(), o);
}

Tensor retnet_g_gamma(int64_t H) {
  SUBQ_CHECK_ARG(H >= 1, "retnet_g_gamma", "H", ">= 1", H);
  Tensor g = Tensor::empty({H}, DType::kF32);
  for (int64_t h = 0; h < H; ++h)
    g.data_as<float>()[h] =
        static_cast<float>(std::log1p(-std::exp2(-5.0 - static_cast<double>(h))));
  return g;
}

double linear_attention_chunk_flops(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                    int64_t chunk) {
  // Per chunk of C tokens: Q K^T (2 C^2 K), A V (2 C^2 V), the inter-chunk product
  // (Q o e^b) S (2 C K V) and the state update K~^T V~ (2 C K V).
  const double C = static_cast<double>(chunk);
  const double chunks = std::ceil(static_cast<double>(T) / C);
  return static_cast<double>(B) * H * chunks * (2 * C * C * (K + V) + 4 * C * K * V);
}

}  // namespace subq
