// The torch ops as C++ functions, for C++ callers that hold torch tensors (model/). Each one is
// also registered as torch.ops.subq.<name> with the same arguments (see the TORCH_LIBRARY
// fragments in ops_*.cc and docs/torch.md). The functions without _forward/_backward in their
// names are differentiable: autograd runs subq's own backward kernels.
//
// Absent tensor outputs (a final state that was not asked for, the gradient of an option that
// was not given) are 0-element f32 tensors, since op schemas cannot return None.
#pragma once

#include <ATen/Tensor.h>

#include <optional>
#include <string>
#include <tuple>

namespace subq::torch_ops {

// ---- exact attention (subq/flash.h) ----
std::tuple<at::Tensor, at::Tensor> flash_attention(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    std::optional<double> softmax_scale = std::nullopt, bool causal = false,
    int64_t window_left = -1, int64_t window_right = -1, double softcap = 0.,
    const std::optional<at::Tensor>& alibi_slopes = std::nullopt,
    const std::optional<at::Tensor>& cu_seqlens_q = std::nullopt,
    const std::optional<at::Tensor>& cu_seqlens_k = std::nullopt);
std::tuple<at::Tensor, at::Tensor> flash_attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    std::optional<double> softmax_scale, bool causal, int64_t window_left, int64_t window_right,
    double softcap, const std::optional<at::Tensor>& alibi_slopes,
    const std::optional<at::Tensor>& cu_seqlens_q, const std::optional<at::Tensor>& cu_seqlens_k);
std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attention_backward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const at::Tensor& dout, std::optional<double> softmax_scale, bool causal,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, const std::optional<at::Tensor>& cu_seqlens_q,
    const std::optional<at::Tensor>& cu_seqlens_k);
// Writes k_new, v_new into the caches (in place) when given; cache_seqlens is not advanced.
std::tuple<at::Tensor, at::Tensor> flash_attention_decode(
    const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
    const at::Tensor& cache_seqlens, const std::optional<at::Tensor>& k_new,
    const std::optional<at::Tensor>& v_new, std::optional<double> softmax_scale, bool causal,
    int64_t window_left, int64_t window_right, double softcap,
    const std::optional<at::Tensor>& alibi_slopes, bool ring_buffer, int64_t num_splits);

// ---- linear and gated linear attention (subq/linear.h) ----
struct LinearArgs {
  std::optional<at::Tensor> g, g_gamma, gk, gv;
  std::optional<at::Tensor> initial_state, initial_z;
  std::optional<double> scale;
  bool normalize = false;
  double eps = 1e-6;
  bool causal = true;
  std::string mode = "chunk";  // chunk | recurrent | parallel
  int64_t chunk_size = 64;
  bool state_v_first = false;
  std::optional<at::Tensor> cu_seqlens;
  bool output_final_state = false;
};
// -> (out [B, T, H, V], final_state f32 [N, H, K, V], final_z f32 [N, H, K])
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_attention(const at::Tensor& q,
                                                                const at::Tensor& k,
                                                                const at::Tensor& v,
                                                                const LinearArgs& args);
// One decode step; state (and z with normalize) updated in place. -> out [B, 1, H, V]
at::Tensor linear_attention_step(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& state, const std::optional<at::Tensor>& z,
                                 const LinearArgs& args);

// ---- feature maps (subq/feature_maps.h) ----
struct FeatureMapArgs {
  std::string map = "identity";
  std::optional<at::Tensor> weight, bias;
  bool query = true;
  int64_t max_len = 0;
  int64_t dpfp_nu = 1;
  std::optional<at::Tensor> cu_seqlens;
};
at::Tensor feature_map(const at::Tensor& x, const FeatureMapArgs& args);

// ---- short convolution (subq/conv.h) ----
// -> (out [B, T, D], final_state f32 [N, W - 1, D])
std::tuple<at::Tensor, at::Tensor> short_conv(const at::Tensor& x, const at::Tensor& weight,
                                              const std::optional<at::Tensor>& bias,
                                              const std::optional<at::Tensor>& initial_state,
                                              bool silu,
                                              const std::optional<at::Tensor>& cu_seqlens,
                                              bool output_final_state);
// One decode step: x [B, D]; state f32 [B, W - 1, D] updated in place. -> out [B, D]
at::Tensor short_conv_update(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& state,
                             const std::optional<at::Tensor>& bias, bool silu);

// ---- linear + sliding-window hybrid (subq/hybrid.h) ----
at::Tensor hybrid_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& fq,
                            const at::Tensor& fk, const at::Tensor& v,
                            const at::Tensor& window_factor, int64_t window,
                            std::optional<double> scale, const std::optional<at::Tensor>& g,
                            const std::optional<at::Tensor>& meta_k,
                            const std::optional<at::Tensor>& meta_v, int64_t chunk_size);

// ---- linear layers on subq's GEMM (subq/gemm.h) ----
// y = x Wᵀ (+ b) for f32 x [..., in], W [out, in], b [out]; differentiable in all three, the
// backward on subq's GEMM too (dx = dy W, dW = dyᵀ x).
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias = std::nullopt);

// Which GEMM the model's linear layers run on: libtorch's (MKL in the PyPI wheel) or subq's.
// SUBQ_GEMM=torch|subq|auto; auto (the default) times both on a typical layer, once per thread
// count (about 50 ms on 2 cores), and keeps the faster (docs/performance.md, "GEMM").
enum class GemmBackend { kTorch, kSubq };
// SUBQ_GEMM's value, checked (throws subq::Error on anything else): torch, subq or auto.
std::string gemm_setting();
GemmBackend linear_gemm_backend();
const char* gemm_backend_name(GemmBackend b);
// The times of the auto choice (ms per forward + backward of the probe layer; 0 when the choice
// came from SUBQ_GEMM or has not been made yet).
struct GemmChoiceTimes {
  double torch_ms = 0, subq_ms = 0;
};
GemmChoiceTimes gemm_choice_times();

}  // namespace subq::torch_ops
