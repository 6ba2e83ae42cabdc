// Public short-convolution entry points: validation, then the float64 reference or the fast
// kernel.
#include "subq/conv.h"

#include "src/checks.h"
#include "src/conv_args.h"
#include "src/cpu/conv_cpu.h"
#include "src/ref/conv_ref.h"
#include "subq/error.h"

namespace subq {

namespace {

using detail::concat;
using detail::ConvArgs;
using namespace detail::checks;  // NOLINT: the shared argument checks

ConvArgs make_args(const char* where, const TensorView& x, const TensorView& weight,
                   const ShortConvOptions& opt) {
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_input(where, "x", x, 3, f64);
  check_input(where, "weight", weight, 2, f64);
  ConvArgs a;
  a.x = x;
  a.weight = weight;
  a.D = x.size(2);
  a.W = weight.size(1);
  SUBQ_CHECK_ARG(weight.size(0) == a.D, where, "weight",
                 concat("shape [", a.D, ", W] (one filter per channel of x)"), weight.describe());
  SUBQ_CHECK_ARG(a.W >= 1 && a.W <= kMaxConvWidth, where, "weight",
                 concat("width W from 1 to ", kMaxConvWidth), a.W);
  a.silu = opt.silu;
  if (opt.bias.defined()) {
    check_input(where, "bias", opt.bias, 1, f64);
    SUBQ_CHECK_ARG(opt.bias.size(0) == a.D, where, "bias", concat("shape [", a.D, "]"),
                   opt.bias.describe());
    a.bias = opt.bias;
  }
  const int64_t B = x.size(0), T = x.size(1);
  if (opt.cu_seqlens.defined()) {
    SUBQ_CHECK_ARG(B == 1, where, "x", "batch 1 with cu_seqlens (packed [1, sum T, D])", B);
    const auto cu = read_cu_seqlens(where, "cu_seqlens", opt.cu_seqlens, T);
    for (size_t n = 0; n + 1 < cu.size(); ++n) a.seqs.push_back({0, cu[n], cu[n + 1] - cu[n]});
    a.varlen = true;
  } else {
    for (int64_t b = 0; b < B; ++b) a.seqs.push_back({b, 0, T});
  }
  const std::vector<int64_t> sshape = {static_cast<int64_t>(a.seqs.size()), a.W - 1, a.D};
  if (opt.initial_state.defined() && a.W > 1) {
    check_state(where, "initial_state", opt.initial_state, sshape, f64);
    a.h0 = opt.initial_state;
  }
  return a;
}

std::vector<int64_t> state_shape(const ConvArgs& a) {
  return {static_cast<int64_t>(a.seqs.size()), a.W - 1, a.D};
}

}  // namespace

void short_conv_forward(const TensorView& x, const TensorView& weight, const TensorView& out,
                        const TensorView& final_state, const ShortConvOptions& opt) {
  const char* where = "short_conv_forward";
  ConvArgs a = make_args(where, x, weight, opt);
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_output(where, "out", out, x.sizes(), f64);
  a.out = out;
  if (final_state.defined() && a.W > 1) {
    check_state(where, "final_state", final_state, state_shape(a), f64);
    a.ht = final_state;
  }
  if (resolve_impl(opt.impl) == Impl::kRef) return ref::short_conv_forward(a);
  UnitStride ux(a.x, false), uo(a.out, true);
  cpu::short_conv_forward(a);
  uo.finish();
}

void short_conv_backward(const TensorView& x, const TensorView& weight, const TensorView& dout,
                         const TensorView& dht, const ShortConvGrads& grads,
                         const ShortConvOptions& opt) {
  const char* where = "short_conv_backward";
  ConvArgs a = make_args(where, x, weight, opt);
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_output(where, "dout", dout, x.sizes(), f64);
  check_output(where, "dx", grads.dx, x.sizes(), f64);
  if (grads.dweight.defined()) check_output(where, "dweight", grads.dweight, weight.sizes(), f64);
  if (grads.dbias.defined()) {
    SUBQ_CHECK_ARG(opt.bias.defined(), where, "dbias", "none without bias", "a tensor");
    check_output(where, "dbias", grads.dbias, opt.bias.sizes(), f64);
  }
  if (a.W > 1) {
    if (grads.dh0.defined()) check_state(where, "dh0", grads.dh0, state_shape(a), f64);
    if (dht.defined()) check_state(where, "dht", dht, state_shape(a), f64);
    a.dht = dht;
  }
  a.dout = dout;
  a.grads = grads;
  if (a.W == 1) a.grads.dh0 = TensorView();  // a width-1 filter has no state
  if (resolve_impl(opt.impl) == Impl::kRef) return ref::short_conv_backward(a);
  if (a.varlen) fill(grads.dx, 0.0);  // rows no sequence covers
  UnitStride ux(a.x, false), udo(a.dout, false), udx(a.grads.dx, true);
  cpu::short_conv_backward(a);
  udx.finish();
}

void short_conv_update(const TensorView& x, const TensorView& weight, const TensorView& state,
                       const TensorView& out, const ShortConvOptions& opt) {
  const char* where = "short_conv_update";
  SUBQ_CHECK_ARG(!opt.cu_seqlens.defined(), where, "cu_seqlens", "none (one token per sequence)",
                 "given");
  SUBQ_CHECK_ARG(!opt.initial_state.defined(), where, "initial_state",
                 "none (the state argument is read and updated in place)", "given");
  check_input(where, "x", x, 2, resolve_impl(opt.impl) == Impl::kRef);
  check_tensor(where, "out", out, 2);
  SUBQ_CHECK_ARG(out.sizes() == x.sizes(), where, "out", shape_str(x.sizes()), out.describe());
  // A step is the forward over T = 1 with the state as both initial and final state.
  const int64_t B = x.size(0), D = x.size(1);
  const TensorView x3(x.data(), x.dtype(), {B, 1, D}, {x.stride(0), D * x.stride(1), x.stride(1)});
  const TensorView o3(out.data(), out.dtype(), {B, 1, D},
                      {out.stride(0), D * out.stride(1), out.stride(1)});
  ShortConvOptions o = opt;
  if (weight.defined() && weight.rank() == 2 && weight.size(1) > 1) {
    SUBQ_CHECK_ARG(state.defined(), where, "state", "an f32 [B, W - 1, D] state", "none");
    o.initial_state = state;
  }
  short_conv_forward(x3, weight, o3, o.initial_state, o);
}

}  // namespace subq
