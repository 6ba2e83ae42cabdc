// Exact attention as torch ops: subq::flash_attention (differentiable), its raw forward and
// backward, and decode against a KV cache.
//
//   q [B, Tq, H, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv]  ->  out [B, Tq, H, Dv] (q's dtype),
//   lse f32 [B, H, Tq] (not differentiable).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "subq/error.h"
#include "subq/flash.h"
#include "torch/ops.h"
#include "torch/torch_bridge.h"

namespace subq::torch_ops {
namespace {

constexpr const char* kFlashOptions =
    "float? softmax_scale=None, bool causal=False, int window_left=-1, int window_right=-1, "
    "float softcap=0., Tensor? alibi_slopes=None, Tensor? cu_seqlens_q=None, "
    "Tensor? cu_seqlens_k=None";

FlashOptions flash_options(const char* op, std::optional<double> softmax_scale, bool causal,
                           int64_t window_left, int64_t window_right, double softcap,
                           const std::optional<at::Tensor>& alibi_slopes,
                           const std::optional<at::Tensor>& cu_seqlens_q,
                           const std::optional<at::Tensor>& cu_seqlens_k) {
  FlashOptions opt;
  if (softmax_scale) opt.softmax_scale = static_cast<float>(*softmax_scale);
  opt.causal = causal;
  opt.window_left = window_left;
  opt.window_right = window_right;
  opt.softcap = static_cast<float>(softcap);
  opt.alibi_slopes = to_view(alibi_slopes, op, "alibi_slopes");
  opt.cu_seqlens_q = to_view(cu_seqlens_q, op, "cu_seqlens_q");
  opt.cu_seqlens_k = to_view(cu_seqlens_k, op, "cu_seqlens_k");
  return opt;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> flash_attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    std::optional<double> softmax_scale, bool causal, int64_t window_left, int64_t window_right,
    double softcap, const std::optional<at::Tensor>& alibi_slopes,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k) {
  constexpr const char* op = "subq::flash_attention";
  const FlashOptions opt = flash_options(op, softmax_scale, causal, window_left, window_right,
                                         softcap, alibi_slopes, cu_seqlens_q, cu_seqlens_k);
  const TensorView qv = to_view(q, op, "q"), kv = to_view(k, op, "k"), vv = to_view(v, op, "v");
  // Shapes are checked by the core op; only what allocation needs is read here.
  SUBQ_CHECK_ARG(q.dim() == 4 && v.dim() == 4, op, "q, v", "4-D tensors [B, T, H, D]", q.dim(),
                 "-D and ", v.dim(), "-D");
  at::Tensor out = empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.scalar_type());
  at::Tensor lse = empty({q.size(0), q.size(2), q.size(1)}, at::kFloat);
  subq::flash_attention_forward(qv, kv, vv, to_view(out, op, "out"), to_view(lse, op, "lse"), opt);
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attention_backward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& dout, std::optional<double> softmax_scale, bool causal,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, const std::optional<at::Tensor>& cu_seqlens_q,
    const std::optional<at::Tensor>& cu_seqlens_k) {
  constexpr const char* op = "subq::flash_attention_backward";
  const FlashOptions opt = flash_options(op, softmax_scale, causal, window_left, window_right,
                                         softcap, alibi_slopes, cu_seqlens_q, cu_seqlens_k);
  at::Tensor dq = at::empty_like(q, at::MemoryFormat::Contiguous);
  at::Tensor dk = at::empty_like(k, at::MemoryFormat::Contiguous);
  at::Tensor dv = at::empty_like(v, at::MemoryFormat::Contiguous);
  const at::Tensor dout_c = dout.contiguous();
  subq::flash_attention_backward(to_view(q, op, "q"), to_view(k, op, "k"), to_view(v, op, "v"),
                                 to_view(out, op, "out"), to_view(lse, op, "lse"),
                                 to_view(dout_c, op, "dout"), to_view(dq, op, "dq"),
                                 to_view(dk, op, "dk"), to_view(dv, op, "dv"), opt);
  return {dq, dk, dv};
}

namespace {

// Autograd through flash_attention_backward: saves q, k, v, out and lse (O(T) memory, no
// attention matrix), as FlashAttention does.
class FlashAttentionFunction : public torch::autograd::Function<FlashAttentionFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
      const at::Tensor& v, std::optional<double> softmax_scale, bool causal, int64_t window_left,
      int64_t window_right, double softcap, const std::optional<at::Tensor>& alibi_slopes,
      const std::optional<at::Tensor>& cu_seqlens_q,
      const std::optional<at::Tensor>& cu_seqlens_k) {
    auto [out, lse] =
        flash_attention_forward(q, k, v, softmax_scale, causal, window_left, window_right, softcap,
                                alibi_slopes, cu_seqlens_q, cu_seqlens_k);
    ctx->save_for_backward({q, k, v, out, lse, alibi_slopes.value_or(at::Tensor()),
                            cu_seqlens_q.value_or(at::Tensor()),
                            cu_seqlens_k.value_or(at::Tensor())});
    ctx->saved_data["softmax_scale"] = softmax_scale;
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["window_left"] = window_left;
    ctx->saved_data["window_right"] = window_right;
    ctx->saved_data["softcap"] = softcap;
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    const c10::IValue scale = ctx->saved_data["softmax_scale"];
    auto [dq, dk, dv] = flash_attention_backward(
        q, k, v, out, lse, grad_or_zeros(grads[0], out),
        scale.isNone() ? std::nullopt : std::optional<double>(scale.toDouble()),
        ctx->saved_data["causal"].toBool(), ctx->saved_data["window_left"].toInt(),
        ctx->saved_data["window_right"].toInt(), ctx->saved_data["softcap"].toDouble(),
        saved_optional(saved[5]), saved_optional(saved[6]), saved_optional(saved[7]));
    // One gradient per forward input: q, k, v, then none for the options.
    return {dq, dk, dv, {}, {}, {}, {}, {}, {}, {}, {}};
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor> flash_attention(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    std::optional<double> softmax_scale, bool causal, int64_t window_left, int64_t window_right,
    double softcap, const std::optional<at::Tensor>& alibi_slopes,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k) {
  auto outs =
      FlashAttentionFunction::apply(q, k, v, softmax_scale, causal, window_left, window_right,
                                    softcap, alibi_slopes, cu_seqlens_q, cu_seqlens_k);
  return {outs[0], outs[1]};
}

std::tuple<at::Tensor, at::Tensor> flash_attention_decode(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
    const at::Tensor& cache_seqlens, const std::optional<at::Tensor>& k_new,
    const std::optional<at::Tensor>& v_new, std::optional<double> softmax_scale, bool causal,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, bool ring_buffer, int64_t num_splits) {
  constexpr const char* op = "subq::flash_attention_decode";
  FlashDecodeOptions opt;
  static_cast<FlashOptions&>(opt) = flash_options(op, softmax_scale, causal, window_left,
                                                  window_right, softcap, alibi_slopes, {}, {});
  opt.ring_buffer = ring_buffer;
  opt.num_splits = static_cast<int>(num_splits);
  SUBQ_CHECK_ARG(q.dim() == 4 && v_cache.dim() == 4, op, "q, v_cache", "4-D tensors [B, T, H, D]",
                 q.dim(), "-D and ", v_cache.dim(), "-D");
  at::Tensor out = empty({q.size(0), q.size(1), q.size(2), v_cache.size(3)}, q.scalar_type());
  at::Tensor lse = empty({q.size(0), q.size(2), q.size(1)}, at::kFloat);
  subq::flash_attention_decode(
      to_view(q, op, "q"), to_view(k_cache, op, "k_cache"), to_view(v_cache, op, "v_cache"),
      to_view(cache_seqlens, op, "cache_seqlens"), to_view(k_new, op, "k_new"),
      to_view(v_new, op, "v_new"), to_view(out, op, "out"), to_view(lse, op, "lse"), opt);
  return {out, lse};
}

TORCH_LIBRARY_FRAGMENT(subq, m) {
  const std::string opts = kFlashOptions;
  define(m,
         "flash_attention(Tensor q, Tensor k, Tensor v, " + opts + ") -> (Tensor out, Tensor lse)");
  define(m, "flash_attention_forward(Tensor q, Tensor k, Tensor v, " + opts +
                ") -> (Tensor out, Tensor lse)");
  define(m,
         "flash_attention_backward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
         "Tensor dout, " +
             opts + ") -> (Tensor dq, Tensor dk, Tensor dv)");
  define(m,
         "flash_attention_decode(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, "
         "Tensor cache_seqlens, Tensor? k_new=None, Tensor? v_new=None, float? softmax_scale=None, "
         "bool causal=False, int window_left=-1, int window_right=-1, float softcap=0., "
         "Tensor? alibi_slopes=None, bool ring_buffer=False, int num_splits=0) "
         "-> (Tensor out, Tensor lse)");
}

TORCH_LIBRARY_IMPL(subq, CPU, m) {
  m.impl("flash_attention", &flash_attention_forward);
  m.impl("flash_attention_forward", &flash_attention_forward);
  m.impl("flash_attention_backward", &flash_attention_backward);
  m.impl("flash_attention_decode", &flash_attention_decode);
}

TORCH_LIBRARY_IMPL(subq, Autograd, m) {
  m.impl("flash_attention", &flash_attention);
}

}  // namespace subq::torch_ops
