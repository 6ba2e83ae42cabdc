// The causal short convolution as torch ops: subq::short_conv (differentiable in x, weight,
// bias and initial_state), its raw forward and backward, and the decode update.
//
//   x [B, T, D], weight [D, W]  ->  out [B, T, D] (x's dtype), final_state f32 [N, W - 1, D]
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "subq/conv.h"
#include "torch/ops.h"
#include "torch/torch_bridge.h"

namespace subq::torch_ops {
namespace {

ShortConvOptions core_options(const char* op, const std::optional<at::Tensor>& bias,
                              const std::optional<at::Tensor>& initial_state, bool silu,
                              const std::optional<at::Tensor>& cu_seqlens) {
  ShortConvOptions opt;
  opt.silu = silu;
  opt.bias = to_view(bias, op, "bias");
  opt.initial_state = to_view(initial_state, op, "initial_state");
  opt.cu_seqlens = to_view(cu_seqlens, op, "cu_seqlens");
  return opt;
}

std::tuple<at::Tensor, at::Tensor> forward_impl(const char* op, const at::Tensor& x,
                                                const at::Tensor& weight,
                                                const ShortConvOptions& opt,
                                                bool output_final_state,
                                                const std::optional<at::Tensor>& cu_seqlens) {
  SUBQ_CHECK_ARG(x.dim() == 3, op, "x", "a 3-D tensor [B, T, D]", x.dim(), "-D");
  SUBQ_CHECK_ARG(weight.dim() == 2, op, "weight", "a 2-D tensor [D, W]", weight.dim(), "-D");
  const TensorView xv = to_view(x, op, "x"), wv = to_view(weight, op, "weight");
  at::Tensor out = empty_like_shape(x, x.scalar_type());
  at::Tensor state = absent();
  if (output_final_state) {
    const int64_t N = cu_seqlens ? cu_seqlens->numel() - 1 : x.size(0);
    state = empty({N, std::max<int64_t>(weight.size(1) - 1, 0), x.size(2)}, at::kFloat);
  }
  short_conv_forward(xv, wv, to_view(out, op, "out"),
                     present(state) ? to_view(state, op, "final_state") : TensorView{}, opt);
  return {out, state};
}

// (dx, dweight, dbias, dh0); absent() where not wanted.
std::vector<at::Tensor> backward_impl(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                      const at::Tensor& dout, const at::Tensor& dht,
                                      const ShortConvOptions& opt,
                                      const std::optional<at::Tensor>& bias,
                                      const std::optional<at::Tensor>& initial_state,
                                      std::array<bool, 3> want) {
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor dw = want[0] ? empty_like_shape(weight, at::kFloat) : absent();
  at::Tensor db = (bias && want[1]) ? empty_like_shape(*bias, at::kFloat) : absent();
  at::Tensor dh0 =
      (initial_state && want[2]) ? empty_like_shape(*initial_state, at::kFloat) : absent();
  ShortConvGrads grads;
  grads.dx = to_view(dx, op, "dx");
  if (present(dw)) grads.dweight = to_view(dw, op, "dweight");
  if (present(db)) grads.dbias = to_view(db, op, "dbias");
  if (present(dh0)) grads.dh0 = to_view(dh0, op, "dh0");
  const at::Tensor dout_c = dout.contiguous();
  const at::Tensor dht_c = contiguous_or_undefined(dht);
  short_conv_backward(to_view(x, op, "x"), to_view(weight, op, "weight"),
                      to_view(dout_c, op, "dout"),
                      present(dht_c) ? to_view(dht_c, op, "dht") : TensorView{}, grads, opt);
  return {dx, dw, db, dh0};
}

class ShortConvFunction : public torch::autograd::Function<ShortConvFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
      const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& initial_state,
      bool silu, const std::optional<at::Tensor>& cu_seqlens, bool output_final_state) {
    constexpr const char* op = "subq::short_conv";
    auto [out, state] =
        forward_impl(op, x, weight, core_options(op, bias, initial_state, silu, cu_seqlens),
                     output_final_state, cu_seqlens);
    ctx->save_for_backward({x, weight, bias.value_or(at::Tensor()),
                            initial_state.value_or(at::Tensor()),
                            cu_seqlens.value_or(at::Tensor())});
    ctx->saved_data["silu"] = silu;
    if (!present(state)) ctx->mark_non_differentiable({state});
    return {out, state};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    constexpr const char* op = "subq::short_conv";
    const auto s = ctx->get_saved_variables();
    const auto bias = saved_optional(s[2]), h0 = saved_optional(s[3]), cu = saved_optional(s[4]);
    const at::Tensor dht = undefined_if_absent(grads[1]);
    auto g = backward_impl(op, s[0], s[1], grad_or_zeros(grads[0], s[0]), dht,
                           core_options(op, bias, h0, ctx->saved_data["silu"].toBool(), cu), bias,
                           h0, {wants_grad(s[1]), wants_grad(s[2]), wants_grad(s[3])});
    for (auto& t : g) t = undefined_if_absent(t);
    return {g[0], g[1], g[2], g[3], {}, {}, {}};
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor> short_conv(const at::Tensor& x, const at::Tensor& weight,
                                              const std::optional<at::Tensor>& bias,
                                              const std::optional<at::Tensor>& initial_state,
                                              bool silu,
                                              const std::optional<at::Tensor>& cu_seqlens,
                                              bool output_final_state) {
  auto outs = ShortConvFunction::apply(x, weight, bias, initial_state, silu, cu_seqlens,
                                       output_final_state);
  return {outs[0], outs[1]};
}

at::Tensor short_conv_update(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& state,
                             const std::optional<at::Tensor>& bias, bool silu) {
  constexpr const char* op = "subq::short_conv_update";
  at::Tensor out = empty_like_shape(x, x.scalar_type());
  subq::short_conv_update(to_view(x, op, "x"), to_view(weight, op, "weight"),
                          to_view(state, op, "state"), to_view(out, op, "out"),
                          core_options(op, bias, {}, silu, {}));
  return out;
}

namespace {

std::tuple<at::Tensor, at::Tensor> short_conv_forward_op(
    const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& initial_state, bool silu,
    const std::optional<at::Tensor>& cu_seqlens, bool output_final_state) {
  constexpr const char* op = "subq::short_conv_forward";
  return forward_impl(op, x, weight, core_options(op, bias, initial_state, silu, cu_seqlens),
                      output_final_state, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> short_conv_backward_op(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& dout,
    const std::optional<at::Tensor>& dht, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& initial_state, bool silu,
    const std::optional<at::Tensor>& cu_seqlens) {
  constexpr const char* op = "subq::short_conv_backward";
  auto g = backward_impl(op, x, weight, dout, dht.value_or(at::Tensor()),
                         core_options(op, bias, initial_state, silu, cu_seqlens), bias,
                         initial_state, {true, true, true});
  return {g[0], g[1], g[2], g[3]};
}

constexpr const char* kConvOptions =
    "Tensor? bias=None, Tensor? initial_state=None, bool silu=False, Tensor? cu_seqlens=None";

}  // namespace

TORCH_LIBRARY_FRAGMENT(subq, m) {
  const std::string opts = kConvOptions;
  define(m, "short_conv(Tensor x, Tensor weight, " + opts +
                ", bool output_final_state=False) -> (Tensor out, Tensor final_state)");
  define(m, "short_conv_forward(Tensor x, Tensor weight, " + opts +
                ", bool output_final_state=False) -> (Tensor out, Tensor final_state)");
  define(m, "short_conv_backward(Tensor x, Tensor weight, Tensor dout, Tensor? dht=None, " + opts +
                ") -> (Tensor dx, Tensor dweight, Tensor dbias, Tensor dh0)");
  define(m,
         "short_conv_update(Tensor x, Tensor weight, Tensor(a!) state, Tensor? bias=None, "
         "bool silu=False) -> Tensor out");
}

TORCH_LIBRARY_IMPL(subq, CPU, m) {
  m.impl("short_conv", &short_conv_forward_op);
  m.impl("short_conv_forward", &short_conv_forward_op);
  m.impl("short_conv_backward", &short_conv_backward_op);
  m.impl("short_conv_update", &short_conv_update);
}

TORCH_LIBRARY_IMPL(subq, Autograd, m) {
  m.impl("short_conv", &short_conv);
}

}  // namespace subq::torch_ops
