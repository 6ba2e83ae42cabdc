// Feature maps as torch ops: subq::feature_map (differentiable in x, and in weight and bias for
// t2r and hedgehog) and its raw forward and backward.
//
//   x [B, T, H, d]  ->  [B, T, H, feature_map_dim(map, d)] (x's dtype)
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "subq/feature_maps.h"
#include "torch/ops.h"
#include "torch/torch_bridge.h"

namespace subq::torch_ops {
namespace {

FeatureMapOptions core_options(const char* op, const std::string& map,
                               const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& bias, bool query, int64_t max_len,
                               int64_t dpfp_nu, const std::optional<at::Tensor>& cu_seqlens) {
  FeatureMapOptions opt;
  try {
    opt.map = feature_map_from_name(map);
  } catch (const Error& e) {
    // Name the op and its argument, as every other message here does.
    const std::string msg = e.what();
    const size_t at = msg.find("expected");
    throw Error(std::string(op) + ": map: " + msg.substr(at == std::string::npos ? 0 : at));
  }
  opt.weight = to_view(weight, op, "weight");
  opt.bias = to_view(bias, op, "bias");
  opt.query = query;
  opt.max_len = max_len;
  opt.dpfp_nu = dpfp_nu;
  opt.cu_seqlens = to_view(cu_seqlens, op, "cu_seqlens");
  return opt;
}

at::Tensor forward_impl(const char* op, const at::Tensor& x, const FeatureMapOptions& opt) {
  SUBQ_CHECK_ARG(x.dim() == 4, op, "x", "a 4-D tensor [B, T, H, d]", x.dim(), "-D");
  const TensorView xv = to_view(x, op, "x");  // checks device and dtype before anything else
  const int64_t f = feature_map_dim(opt, x.size(3));
  at::Tensor out = empty({x.size(0), x.size(1), x.size(2), f}, x.scalar_type());
  feature_map_forward(xv, to_view(out, op, "out"), opt);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_impl(
    const char* op, const at::Tensor& x, const at::Tensor& dout, const FeatureMapOptions& opt,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
    bool want_weight, bool want_bias) {
  at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
  // The performer's projection is fixed (it gets no gradient); t2r and hedgehog learn theirs.
  const bool learned = opt.map == FeatureMap::kT2R || opt.map == FeatureMap::kHedgehog;
  at::Tensor dw =
      (learned && weight && want_weight) ? empty_like_shape(*weight, at::kFloat) : absent();
  at::Tensor db = (learned && bias && want_bias) ? empty_like_shape(*bias, at::kFloat) : absent();
  FeatureMapGrads grads;
  grads.dx = to_view(dx, op, "dx");
  if (present(dw)) grads.dweight = to_view(dw, op, "dweight");
  if (present(db)) grads.dbias = to_view(db, op, "dbias");
  const at::Tensor dout_c = dout.contiguous();
  feature_map_backward(to_view(x, op, "x"), to_view(dout_c, op, "dout"), grads, opt);
  return {dx, dw, db};
}

struct FeatureMapScalars {
  std::string map;
  bool query;
  int64_t max_len, dpfp_nu;
};

class FeatureMapFunction : public torch::autograd::Function<FeatureMapFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& x,
                                                const std::optional<at::Tensor>& weight,
                                                const std::optional<at::Tensor>& bias,
                                                const FeatureMapScalars& s,
                                                const std::optional<at::Tensor>& cu_seqlens) {
    const auto opt = core_options("subq::feature_map", s.map, weight, bias, s.query, s.max_len,
                                  s.dpfp_nu, cu_seqlens);
    at::Tensor out = forward_impl("subq::feature_map", x, opt);
    ctx->save_for_backward({x, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()),
                            cu_seqlens.value_or(at::Tensor())});
    ctx->saved_data["map"] = s.map;
    ctx->saved_data["query"] = s.query;
    ctx->saved_data["max_len"] = s.max_len;
    ctx->saved_data["dpfp_nu"] = s.dpfp_nu;
    return {out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const std::string map = d["map"].toStringRef();
    const auto opt = core_options(
        "subq::feature_map", map, saved_optional(saved[1]), saved_optional(saved[2]),
        d["query"].toBool(), d["max_len"].toInt(), d["dpfp_nu"].toInt(), saved_optional(saved[3]));
    at::Tensor dout = grads[0];
    if (!dout.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), {}, {}};
    auto [dx, dw, db] =
        backward_impl("subq::feature_map", saved[0], dout, opt, saved_optional(saved[1]),
                      saved_optional(saved[2]), wants_grad(saved[1]), wants_grad(saved[2]));
    return {dx, undefined_if_absent(dw), undefined_if_absent(db), {}, {}};
  }
};

constexpr const char* kFeatureMapOptions =
    "str map, Tensor? weight=None, Tensor? bias=None, bool query=True, int max_len=0, "
    "int dpfp_nu=1, Tensor? cu_seqlens=None";

at::Tensor feature_map_op(const at::Tensor& x, c10::string_view map,
                          const std::optional<at::Tensor>& weight,
                          const std::optional<at::Tensor>& bias, bool query, int64_t max_len,
                          int64_t dpfp_nu, const std::optional<at::Tensor>& cu_seqlens) {
  return FeatureMapFunction::apply(
      x, weight, bias, FeatureMapScalars{std::string(map), query, max_len, dpfp_nu}, cu_seqlens)[0];
}

at::Tensor feature_map_forward_op(const at::Tensor& x, c10::string_view map,
                                  const std::optional<at::Tensor>& weight,
                                  const std::optional<at::Tensor>& bias, bool query,
                                  int64_t max_len, int64_t dpfp_nu,
                                  const std::optional<at::Tensor>& cu_seqlens) {
  constexpr const char* op = "subq::feature_map_forward";
  return forward_impl(
      op, x, core_options(op, std::string(map), weight, bias, query, max_len, dpfp_nu, cu_seqlens));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> feature_map_backward_op(
    const at::Tensor& x, const at::Tensor& dout, c10::string_view map,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, bool query,
    int64_t max_len, int64_t dpfp_nu, const std::optional<at::Tensor>& cu_seqlens) {
  constexpr const char* op = "subq::feature_map_backward";
  return backward_impl(
      op, x, dout,
      core_options(op, std::string(map), weight, bias, query, max_len, dpfp_nu, cu_seqlens), weight,
      bias, true, true);
}

}  // namespace

at::Tensor feature_map(const at::Tensor& x, const FeatureMapArgs& a) {
  return feature_map_op(x, a.map, a.weight, a.bias, a.query, a.max_len, a.dpfp_nu, a.cu_seqlens);
}

TORCH_LIBRARY_FRAGMENT(subq, m) {
  const std::string opts = kFeatureMapOptions;
  define(m, "feature_map(Tensor x, " + opts + ") -> Tensor");
  define(m, "feature_map_forward(Tensor x, " + opts + ") -> Tensor");
  define(m, "feature_map_backward(Tensor x, Tensor dout, " + opts +
                ") -> (Tensor dx, Tensor dweight, Tensor dbias)");
}

TORCH_LIBRARY_IMPL(subq, CPU, m) {
  m.impl("feature_map", &feature_map_forward_op);
  m.impl("feature_map_forward", &feature_map_forward_op);
  m.impl("feature_map_backward", &feature_map_backward_op);
}

TORCH_LIBRARY_IMPL(subq, Autograd, m) {
  m.impl("feature_map", &feature_map_op);
}

}  // namespace subq::torch_ops
