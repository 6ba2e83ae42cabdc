// Linear and gated linear attention as torch ops: subq::linear_attention (differentiable in q,
// k, v, every gate and the initial states), its raw forward and backward, and the decode step.
//
//   q, k [B, T, Hk, K], v [B, T, H, V]  ->  out [B, T, H, V] (v's dtype),
//   final_state f32 [N, H, K, V] (or V-first), final_z f32 [N, H, K] (normalize only).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "subq/error.h"
#include "subq/linear.h"
#include "torch/ops.h"
#include "torch/torch_bridge.h"

namespace subq::torch_ops {
namespace {

// The non-tensor options, and cu_seqlens (an index, never differentiated).
struct LinearScalars {
  std::optional<double> scale;
  bool normalize = false;
  double eps = 1e-6;
  bool causal = true;
  std::string mode = "chunk";
  int64_t chunk_size = 64;
  bool state_v_first = false;
  std::optional<at::Tensor> cu_seqlens;
  bool output_final_state = false;
};

LinearScalars scalars_of(const LinearArgs& a) {
  return {a.scale,      a.normalize,         a.eps, a.causal, a.mode, a.chunk_size, a.state_v_first,
          a.cu_seqlens, a.output_final_state};
}

LinearMode mode_from_name(const char* op, const std::string& mode) {
  if (mode == "chunk") return LinearMode::kChunk;
  if (mode == "recurrent") return LinearMode::kRecurrent;
  if (mode == "parallel") return LinearMode::kParallel;
  throw_arg_error(op, "mode", "chunk, recurrent or parallel", mode);
}

// The tensors that are inputs of the graph: gates and initial states.
struct LinearInputs {
  std::optional<at::Tensor> g, g_gamma, gk, gv, initial_state, initial_z;
};

LinearAttentionOptions core_options(const char* op, const LinearInputs& in,
                                    const LinearScalars& s) {
  LinearAttentionOptions opt;
  if (s.scale) opt.scale = static_cast<float>(*s.scale);
  opt.normalize = s.normalize;
  opt.eps = static_cast<float>(s.eps);
  opt.g = to_view(in.g, op, "g");
  opt.g_gamma = to_view(in.g_gamma, op, "g_gamma");
  opt.gk = to_view(in.gk, op, "gk");
  opt.gv = to_view(in.gv, op, "gv");
  opt.initial_state = to_view(in.initial_state, op, "initial_state");
  opt.initial_z = to_view(in.initial_z, op, "initial_z");
  opt.state_v_first = s.state_v_first;
  opt.cu_seqlens = to_view(s.cu_seqlens, op, "cu_seqlens");
  opt.causal = s.causal;
  opt.mode = mode_from_name(op, s.mode);
  opt.chunk_size = s.chunk_size;
  return opt;
}

// Number of sequences: B, or the varlen count.
int64_t num_sequences(const at::Tensor& q, const LinearScalars& s) {
  return s.cu_seqlens ? s.cu_seqlens->numel() - 1 : q.size(0);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_impl(const char* op, const at::Tensor& q,
                                                            const at::Tensor& k,
                                                            const at::Tensor& v,
                                                            const LinearInputs& in,
                                                            const LinearScalars& s) {
  const LinearAttentionOptions opt = core_options(op, in, s);
  const TensorView qv = to_view(q, op, "q"), kv = to_view(k, op, "k"), vv = to_view(v, op, "v");
  SUBQ_CHECK_ARG(q.dim() == 4 && v.dim() == 4, op, "q, v", "4-D tensors [B, T, H, D]", q.dim(),
                 "-D and ", v.dim(), "-D");
  at::Tensor out = empty_like_shape(v, v.scalar_type());
  at::Tensor state = absent(), z = absent();
  if (s.output_final_state) {
    const int64_t N = num_sequences(q, s), H = v.size(2), K = q.size(3), V = v.size(3);
    state = s.state_v_first ? empty({N, H, V, K}, at::kFloat) : empty({N, H, K, V}, at::kFloat);
    if (s.normalize) z = empty({N, H, K}, at::kFloat);
  }
  subq::linear_attention_forward(qv, kv, vv, to_view(out, op, "out"),
                                 present(state) ? to_view(state, op, "final_state") : TensorView{},
                                 present(z) ? to_view(z, op, "final_z") : TensorView{}, opt);
  return {out, state, z};
}

// (dq, dk, dv, dg, dg_gamma, dgk, dgv, dh0, dz0); absent() for gradients of absent inputs or of
// inputs that need none (`want` false).
std::vector<at::Tensor> backward_impl(const char* op, const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& dout,
                                      const at::Tensor& dht, const at::Tensor& dzt,
                                      const LinearInputs& in, const LinearScalars& s,
                                      const std::array<bool, 6>& want) {
  const LinearAttentionOptions opt = core_options(op, in, s);
  at::Tensor dq = at::empty_like(q, at::MemoryFormat::Contiguous);
  at::Tensor dk = at::empty_like(k, at::MemoryFormat::Contiguous);
  at::Tensor dv = at::empty_like(v, at::MemoryFormat::Contiguous);
  // Gate and state gradients are f32, shaped like what they differentiate.
  const std::optional<at::Tensor>* optional_inputs[6] = {&in.g,  &in.g_gamma,       &in.gk,
                                                         &in.gv, &in.initial_state, &in.initial_z};
  at::Tensor extra[6];
  for (int i = 0; i < 6; ++i) {
    const auto& t = *optional_inputs[i];
    extra[i] = (t && t->defined() && want[i]) ? empty_like_shape(*t, at::kFloat) : absent();
  }
  LinearAttentionGrads grads;
  grads.dq = to_view(dq, op, "dq");
  grads.dk = to_view(dk, op, "dk");
  grads.dv = to_view(dv, op, "dv");
  TensorView* extra_views[6] = {&grads.dg,  &grads.dg_gamma, &grads.dgk,
                                &grads.dgv, &grads.dh0,      &grads.dz0};
  const char* extra_names[6] = {"dg", "dg_gamma", "dgk", "dgv", "dh0", "dz0"};
  for (int i = 0; i < 6; ++i)
    if (present(extra[i])) *extra_views[i] = to_view(extra[i], op, extra_names[i]);
  const at::Tensor dout_c = dout.contiguous();
  const at::Tensor dht_c = contiguous_or_undefined(dht), dzt_c = contiguous_or_undefined(dzt);
  subq::linear_attention_backward(
      to_view(q, op, "q"), to_view(k, op, "k"), to_view(v, op, "v"), to_view(dout_c, op, "dout"),
      present(dht_c) ? to_view(dht_c, op, "dht") : TensorView{},
      present(dzt_c) ? to_view(dzt_c, op, "dzt") : TensorView{}, grads, opt);
  return {dq, dk, dv, extra[0], extra[1], extra[2], extra[3], extra[4], extra[5]};
}

class LinearAttentionFunction : public torch::autograd::Function<LinearAttentionFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k,
      const at::Tensor& v, const std::optional<at::Tensor>& g,
      const std::optional<at::Tensor>& g_gamma, const std::optional<at::Tensor>& gk,
      const std::optional<at::Tensor>& gv, const std::optional<at::Tensor>& initial_state,
      const std::optional<at::Tensor>& initial_z, const LinearScalars& s) {
    const LinearInputs in{g, g_gamma, gk, gv, initial_state, initial_z};
    auto [out, state, z] = forward_impl("subq::linear_attention", q, k, v, in, s);
    // The backward recomputes the chunk states from q, k, v and the gates: nothing T x T and no
    // per-chunk states are kept.
    ctx->save_for_backward({q, k, v, g.value_or(at::Tensor()), g_gamma.value_or(at::Tensor()),
                            gk.value_or(at::Tensor()), gv.value_or(at::Tensor()),
                            initial_state.value_or(at::Tensor()),
                            initial_z.value_or(at::Tensor())});
    ctx->saved_data["cu_seqlens"] = s.cu_seqlens.value_or(at::Tensor());  // an index: no grad
    ctx->saved_data["scale"] = s.scale;
    ctx->saved_data["normalize"] = s.normalize;
    ctx->saved_data["eps"] = s.eps;
    ctx->saved_data["causal"] = s.causal;
    ctx->saved_data["mode"] = s.mode;
    ctx->saved_data["chunk_size"] = s.chunk_size;
    ctx->saved_data["state_v_first"] = s.state_v_first;
    if (!present(state)) ctx->mark_non_differentiable({state});
    if (!present(z)) ctx->mark_non_differentiable({z});
    return {out, state, z};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    LinearScalars s;
    auto& d = ctx->saved_data;
    if (!d["scale"].isNone()) s.scale = d["scale"].toDouble();
    s.normalize = d["normalize"].toBool();
    s.eps = d["eps"].toDouble();
    s.causal = d["causal"].toBool();
    s.mode = d["mode"].toStringRef();
    s.chunk_size = d["chunk_size"].toInt();
    s.state_v_first = d["state_v_first"].toBool();
    s.cu_seqlens = saved_optional(d["cu_seqlens"].toTensor());
    const LinearInputs in{saved_optional(saved[3]), saved_optional(saved[4]),
                          saved_optional(saved[5]), saved_optional(saved[6]),
                          saved_optional(saved[7]), saved_optional(saved[8])};
    std::array<bool, 6> want;
    for (int i = 0; i < 6; ++i) want[i] = wants_grad(saved[3 + i]);
    const at::Tensor dht = undefined_if_absent(grads[1]), dzt = undefined_if_absent(grads[2]);
    auto g = backward_impl("subq::linear_attention", saved[0], saved[1], saved[2],
                           grad_or_zeros(grads[0], saved[2]), dht, dzt, in, s, want);
    for (auto& t : g) t = undefined_if_absent(t);  // no gradient for an absent input
    g.push_back(at::Tensor());                     // the scalars
    return g;
  }
};

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention(const at::Tensor& q,
                                                                const at::Tensor& k,
                                                                const at::Tensor& v,
                                                                const LinearArgs& a) {
  auto outs = LinearAttentionFunction::apply(q, k, v, a.g, a.g_gamma, a.gk, a.gv, a.initial_state,
                                             a.initial_z, scalars_of(a));
  return {outs[0], outs[1], outs[2]};
}

at::Tensor linear_attention_step(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& state, const std::optional<at::Tensor>& z,
                                 const LinearArgs& a) {
  constexpr const char* op = "subq::linear_attention_step";
  const LinearInputs in{a.g, a.g_gamma, a.gk, a.gv, {}, {}};
  const LinearAttentionOptions opt = core_options(op, in, scalars_of(a));
  SUBQ_CHECK_ARG(v.dim() == 4, op, "v", "a 4-D tensor [B, 1, H, V]", v.dim(), "-D");
  at::Tensor out = empty_like_shape(v, v.scalar_type());
  subq::linear_attention_step(to_view(q, op, "q"), to_view(k, op, "k"), to_view(v, op, "v"),
                              to_view(state, op, "state"), to_view(z, op, "z"),
                              to_view(out, op, "out"), opt);
  return out;
}

namespace {

// The schema's argument list after q, k, v (shared by the ops below).
constexpr const char* kLinearOptions =
    "Tensor? g=None, Tensor? g_gamma=None, Tensor? gk=None, Tensor? gv=None, "
    "Tensor? initial_state=None, Tensor? initial_z=None, float? scale=None, "
    "bool normalize=False, float eps=1e-6, bool causal=True, str mode=\"chunk\", "
    "int chunk_size=64, bool state_v_first=False, Tensor? cu_seqlens=None, "
    "bool output_final_state=False";

LinearArgs make_args(const std::optional<at::Tensor>& g, const std::optional<at::Tensor>& g_gamma,
                     const std::optional<at::Tensor>& gk, const std::optional<at::Tensor>& gv,
                     const std::optional<at::Tensor>& initial_state,
                     const std::optional<at::Tensor>& initial_z, std::optional<double> scale,
                     bool normalize, double eps, bool causal, std::string mode, int64_t chunk_size,
                     bool state_v_first, const std::optional<at::Tensor>& cu_seqlens,
                     bool output_final_state) {
  return {g,
          g_gamma,
          gk,
          gv,
          initial_state,
          initial_z,
          scale,
          normalize,
          eps,
          causal,
          std::move(mode),
          chunk_size,
          state_v_first,
          cu_seqlens,
          output_final_state};
}

#define SUBQ_LINEAR_PARAMS                                                                         \
  const std::optional<at::Tensor>&g, const std::optional<at::Tensor>&g_gamma,                      \
      const std::optional<at::Tensor>&gk, const std::optional<at::Tensor>&gv,                      \
      const std::optional<at::Tensor>&initial_state, const std::optional<at::Tensor>&initial_z,    \
      std::optional<double> scale, bool normalize, double eps, bool causal, c10::string_view mode, \
      int64_t chunk_size, bool state_v_first, const std::optional<at::Tensor>&cu_seqlens,          \
      bool output_final_state
#define SUBQ_LINEAR_ARGS                                                                 \
  make_args(g, g_gamma, gk, gv, initial_state, initial_z, scale, normalize, eps, causal, \
            std::string(mode), chunk_size, state_v_first, cu_seqlens, output_final_state)

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_op(const at::Tensor& q,
                                                                   const at::Tensor& k,
                                                                   const at::Tensor& v,
                                                                   SUBQ_LINEAR_PARAMS) {
  return linear_attention(q, k, v, SUBQ_LINEAR_ARGS);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention_forward_op(const at::Tensor& q,
                                                                           const at::Tensor& k,
                                                                           const at::Tensor& v,
                                                                           SUBQ_LINEAR_PARAMS) {
  const LinearArgs a = SUBQ_LINEAR_ARGS;
  return forward_impl("subq::linear_attention_forward", q, k, v,
                      {a.g, a.g_gamma, a.gk, a.gv, a.initial_state, a.initial_z}, scalars_of(a));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
linear_attention_backward_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& dout, const std::optional<at::Tensor>& dht,
                             const std::optional<at::Tensor>& dzt, SUBQ_LINEAR_PARAMS) {
  const LinearArgs a = SUBQ_LINEAR_ARGS;
  const auto d = backward_impl("subq::linear_attention_backward", q, k, v, dout,
                               dht.value_or(at::Tensor()), dzt.value_or(at::Tensor()),
                               {a.g, a.g_gamma, a.gk, a.gv, a.initial_state, a.initial_z},
                               scalars_of(a), {true, true, true, true, true, true});
  return {d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8]};
}

at::Tensor linear_attention_step_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& state, const std::optional<at::Tensor>& z,
                                    const std::optional<at::Tensor>& g,
                                    const std::optional<at::Tensor>& g_gamma,
                                    const std::optional<at::Tensor>& gk,
                                    const std::optional<at::Tensor>& gv,
                                    std::optional<double> scale, bool normalize, double eps,
                                    bool state_v_first) {
  LinearArgs a;
  a.g = g;
  a.g_gamma = g_gamma;
  a.gk = gk;
  a.gv = gv;
  a.scale = scale;
  a.normalize = normalize;
  a.eps = eps;
  a.state_v_first = state_v_first;
  return linear_attention_step(q, k, v, state, z, a);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(subq, m) {
  const std::string opts = kLinearOptions;
  const std::string outs = " -> (Tensor out, Tensor final_state, Tensor final_z)";
  define(m, "linear_attention(Tensor q, Tensor k, Tensor v, " + opts + ")" + outs);
  define(m, "linear_attention_forward(Tensor q, Tensor k, Tensor v, " + opts + ")" + outs);
  define(m,
         "linear_attention_backward(Tensor q, Tensor k, Tensor v, Tensor dout, "
         "Tensor? dht=None, Tensor? dzt=None, " +
             opts +
             ") -> (Tensor dq, Tensor dk, Tensor dv, Tensor dg, Tensor dg_gamma, Tensor dgk, "
             "Tensor dgv, Tensor dh0, Tensor dz0)");
  define(m,
         "linear_attention_step(Tensor q, Tensor k, Tensor v, Tensor(a!) state, "
         "Tensor(b!)? z=None, Tensor? g=None, Tensor? g_gamma=None, Tensor? gk=None, "
         "Tensor? gv=None, float? scale=None, bool normalize=False, float eps=1e-6, "
         "bool state_v_first=False) -> Tensor out");
}

TORCH_LIBRARY_IMPL(subq, CPU, m) {
  m.impl("linear_attention", &linear_attention_forward_op);
  m.impl("linear_attention_forward", &linear_attention_forward_op);
  m.impl("linear_attention_backward", &linear_attention_backward_op);
  m.impl("linear_attention_step", &linear_attention_step_op);
}

TORCH_LIBRARY_IMPL(subq, Autograd, m) {
  m.impl("linear_attention", &linear_attention_op);
}

}  // namespace subq::torch_ops
