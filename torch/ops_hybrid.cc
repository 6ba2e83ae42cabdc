// The linear + sliding-window hybrid as torch ops: subq::hybrid_attention (differentiable in q,
// k, the feature maps fq and fk, v, window_factor, g and the meta tokens) and its raw forward
// and backward; decode through torch.classes.subq.HybridCache (prefill, then one step a token).
//
//   q, k [B, T, H, d], fq, fk [B, T, H, f], v [B, T, H, dv]  ->  out [B, T, H, dv]
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "subq/hybrid.h"
#include "torch/ops.h"
#include "torch/torch_bridge.h"

namespace subq::torch_ops {
namespace {

// scale_or_nan: NaN means the default 1/sqrt(d). (Passing std::optional<double> along here
// trips GCC 12's -Wmaybe-uninitialized.)
HybridOptions core_options(const char* op, const at::Tensor& window_factor, int64_t window,
                           double scale_or_nan, const std::optional<at::Tensor>& g,
                           const std::optional<at::Tensor>& meta_k,
                           const std::optional<at::Tensor>& meta_v, int64_t chunk_size) {
  HybridOptions opt;
  opt.window = window;
  if (!std::isnan(scale_or_nan)) opt.scale = static_cast<float>(scale_or_nan);
  opt.window_factor = to_view(window_factor, op, "window_factor");
  opt.g = to_view(g, op, "g");
  opt.meta_k = to_view(meta_k, op, "meta_k");
  opt.meta_v = to_view(meta_v, op, "meta_v");
  opt.chunk_size = chunk_size;
  return opt;
}

double nan_if_absent(std::optional<double> x) {
  return x.value_or(std::numeric_limits<double>::quiet_NaN());
}

at::Tensor forward_impl(const char* op, const at::Tensor& q, const at::Tensor& k,
                        const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& v,
                        const HybridOptions& opt) {
  const TensorView vv = to_view(v, op, "v");
  at::Tensor out = empty_like_shape(v, v.scalar_type());
  hybrid_attention_forward(to_view(q, op, "q"), to_view(k, op, "k"), to_view(fq, op, "fq"),
                           to_view(fk, op, "fk"), vv, to_view(out, op, "out"), opt);
  return out;
}

// (dq, dk, dfq, dfk, dv, dwindow_factor, dg, dmeta_k, dmeta_v)
std::vector<at::Tensor> backward_impl(const char* op, const std::vector<at::Tensor>& in,
                                      const at::Tensor& dout, const HybridOptions& opt,
                                      const at::Tensor& window_factor,
                                      const std::optional<at::Tensor>& g,
                                      const std::optional<at::Tensor>& meta_k,
                                      const std::optional<at::Tensor>& meta_v,
                                      std::array<bool, 4> want) {
  std::vector<at::Tensor> d;
  for (const auto& t : in) d.push_back(at::empty_like(t, at::MemoryFormat::Contiguous));
  auto grad_of = [](const std::optional<at::Tensor>& t, bool w) {
    return (t && w) ? empty_like_shape(*t, at::kFloat) : absent();
  };
  d.push_back(grad_of(window_factor, want[0]));
  d.push_back(grad_of(g, want[1]));
  d.push_back(grad_of(meta_k, want[2]));
  d.push_back(grad_of(meta_v, want[3]));
  HybridGrads grads;
  grads.dq = to_view(d[0], op, "dq");
  grads.dk = to_view(d[1], op, "dk");
  grads.dfq = to_view(d[2], op, "dfq");
  grads.dfk = to_view(d[3], op, "dfk");
  grads.dv = to_view(d[4], op, "dv");
  if (present(d[5])) grads.dwindow_factor = to_view(d[5], op, "dwindow_factor");
  if (present(d[6])) grads.dg = to_view(d[6], op, "dg");
  if (present(d[7])) grads.dmeta_k = to_view(d[7], op, "dmeta_k");
  if (present(d[8])) grads.dmeta_v = to_view(d[8], op, "dmeta_v");
  const at::Tensor dout_c = dout.contiguous();
  hybrid_attention_backward(to_view(in[0], op, "q"), to_view(in[1], op, "k"),
                            to_view(in[2], op, "fq"), to_view(in[3], op, "fk"),
                            to_view(in[4], op, "v"), to_view(dout_c, op, "dout"), grads, opt);
  return d;
}

class HybridAttentionFunction : public torch::autograd::Function<HybridAttentionFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
      const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& v,
      const at::Tensor& window_factor, const std::optional<at::Tensor>& g,
      const std::optional<at::Tensor>& meta_k, const std::optional<at::Tensor>& meta_v,
      int64_t window, std::optional<double> scale, int64_t chunk_size) {
    constexpr const char* op = "subq::hybrid_attention";
    at::Tensor out = forward_impl(op, q, k, fq, fk, v,
                                  core_options(op, window_factor, window, nan_if_absent(scale), g,
                                               meta_k, meta_v, chunk_size));
    ctx->save_for_backward({q, k, fq, fk, v, window_factor, g.value_or(at::Tensor()),
                            meta_k.value_or(at::Tensor()), meta_v.value_or(at::Tensor())});
    ctx->saved_data["window"] = window;
    ctx->saved_data["scale"] = scale.value_or(std::numeric_limits<double>::quiet_NaN());
    ctx->saved_data["chunk_size"] = chunk_size;
    return {out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    constexpr const char* op = "subq::hybrid_attention";
    const auto s = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const auto g = saved_optional(s[6]), mk = saved_optional(s[7]), mv = saved_optional(s[8]);
    const auto opt = core_options(op, s[5], d["window"].toInt(), d["scale"].toDouble(), g, mk, mv,
                                  d["chunk_size"].toInt());
    auto out = backward_impl(
        op, {s[0], s[1], s[2], s[3], s[4]}, grad_or_zeros(grads[0], s[4]), opt, s[5], g, mk, mv,
        {wants_grad(s[5]), wants_grad(s[6]), wants_grad(s[7]), wants_grad(s[8])});
    for (auto& t : out) t = undefined_if_absent(t);
    out.insert(out.end(), {at::Tensor(), at::Tensor(), at::Tensor()});  // window, scale, chunk
    return out;
  }
};

constexpr const char* kHybridOptions =
    "Tensor window_factor, int window=64, float? scale=None, Tensor? g=None, "
    "Tensor? meta_k=None, Tensor? meta_v=None, int chunk_size=64";

at::Tensor hybrid_attention_forward_op(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& fq, const at::Tensor& fk,
                                       const at::Tensor& v, const at::Tensor& window_factor,
                                       int64_t window, std::optional<double> scale,
                                       const std::optional<at::Tensor>& g,
                                       const std::optional<at::Tensor>& meta_k,
                                       const std::optional<at::Tensor>& meta_v,
                                       int64_t chunk_size) {
  constexpr const char* op = "subq::hybrid_attention_forward";
  return forward_impl(
      op, q, k, fq, fk, v,
      core_options(op, window_factor, window, nan_if_absent(scale), g, meta_k, meta_v, chunk_size));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
hybrid_attention_backward_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& fq,
                             const at::Tensor& fk, const at::Tensor& v, const at::Tensor& dout,
                             const at::Tensor& window_factor, int64_t window,
                             std::optional<double> scale, const std::optional<at::Tensor>& g,
                             const std::optional<at::Tensor>& meta_k,
                             const std::optional<at::Tensor>& meta_v, int64_t chunk_size) {
  constexpr const char* op = "subq::hybrid_attention_backward";
  const auto opt =
      core_options(op, window_factor, window, nan_if_absent(scale), g, meta_k, meta_v, chunk_size);
  auto d = backward_impl(op, {q, k, fq, fk, v}, dout, opt, window_factor, g, meta_k, meta_v,
                         {true, true, true, true});
  return {d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8]};
}

}  // namespace

at::Tensor hybrid_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& fq,
                            const at::Tensor& fk, const at::Tensor& v,
                            const at::Tensor& window_factor, int64_t window,
                            std::optional<double> scale, const std::optional<at::Tensor>& g,
                            const std::optional<at::Tensor>& meta_k,
                            const std::optional<at::Tensor>& meta_v, int64_t chunk_size) {
  return HybridAttentionFunction::apply(q, k, fq, fk, v, window_factor, g, meta_k, meta_v, window,
                                        scale, chunk_size)[0];
}

namespace {

// Decode for Python: subq::HybridCache as a torch class (torch.classes.subq.HybridCache), since
// the cache is a ring with a position per sequence rather than one tensor.
struct HybridCacheHolder : torch::CustomClassHolder {
  HybridCacheHolder(int64_t B, int64_t H, int64_t d, int64_t f, int64_t dv, int64_t window)
      : cache(HybridCache::create(B, H, d, f, dv, window)) {}
  HybridCache cache;
};

HybridOptions step_options(const char* op, const at::Tensor& window_factor,
                           std::optional<double> scale, int64_t chunk_size,
                           const HybridCache& cache) {
  return core_options(op, window_factor, cache.window, nan_if_absent(scale), std::nullopt,
                      std::nullopt, std::nullopt, chunk_size);
}

void hybrid_cache_prefill_method(const c10::intrusive_ptr<HybridCacheHolder>& self,
                                 const at::Tensor& k, const at::Tensor& fk, const at::Tensor& v,
                                 const std::optional<at::Tensor>& g,
                                 const at::Tensor& window_factor, std::optional<double> scale,
                                 int64_t chunk_size) {
  constexpr const char* op = "subq.HybridCache.prefill";
  subq::hybrid_cache_prefill(to_view(k, op, "k"), to_view(fk, op, "fk"), to_view(v, op, "v"),
                             to_view(g, op, "g"), self->cache,
                             step_options(op, window_factor, scale, chunk_size, self->cache));
}

at::Tensor hybrid_cache_step_method(const c10::intrusive_ptr<HybridCacheHolder>& self,
                                    const at::Tensor& q, const at::Tensor& k, const at::Tensor& fq,
                                    const at::Tensor& fk, const at::Tensor& v,
                                    const std::optional<at::Tensor>& g,
                                    const at::Tensor& window_factor, std::optional<double> scale,
                                    int64_t chunk_size) {
  constexpr const char* op = "subq.HybridCache.step";
  const TensorView vv = to_view(v, op, "v");
  at::Tensor out = empty_like_shape(v, v.scalar_type());
  subq::hybrid_attention_step(to_view(q, op, "q"), to_view(k, op, "k"), to_view(fq, op, "fq"),
                              to_view(fk, op, "fk"), vv, to_view(g, op, "g"), self->cache,
                              to_view(out, op, "out"),
                              step_options(op, window_factor, scale, chunk_size, self->cache));
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(subq, m) {
  m.class_<HybridCacheHolder>("HybridCache")
      .def(torch::init<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>())
      .def("nbytes",
           [](const c10::intrusive_ptr<HybridCacheHolder>& self) {
             return static_cast<int64_t>(self->cache.nbytes());
           })
      .def("prefill", &hybrid_cache_prefill_method)
      .def("step", &hybrid_cache_step_method);
}

TORCH_LIBRARY_FRAGMENT(subq, m) {
  const std::string opts = kHybridOptions;
  define(m, "hybrid_attention(Tensor q, Tensor k, Tensor fq, Tensor fk, Tensor v, " + opts +
                ") -> Tensor");
  define(m, "hybrid_attention_forward(Tensor q, Tensor k, Tensor fq, Tensor fk, Tensor v, " + opts +
                ") -> Tensor");
  define(
      m,
      "hybrid_attention_backward(Tensor q, Tensor k, Tensor fq, Tensor fk, Tensor v, "
      "Tensor dout, " +
          opts +
          ") -> (Tensor dq, Tensor dk, Tensor dfq, Tensor dfk, Tensor dv, Tensor dwindow_factor, "
          "Tensor dg, Tensor dmeta_k, Tensor dmeta_v)");
}

TORCH_LIBRARY_IMPL(subq, CPU, m) {
  m.impl("hybrid_attention", &hybrid_attention_forward_op);
  m.impl("hybrid_attention_forward", &hybrid_attention_forward_op);
  m.impl("hybrid_attention_backward", &hybrid_attention_backward_op);
}

TORCH_LIBRARY_IMPL(subq, Autograd, m) {
  m.impl("hybrid_attention", &hybrid_attention);
}

}  // namespace subq::torch_ops
