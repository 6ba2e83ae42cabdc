// The building blocks of the LLaMA-style decoder (libtorch): RMSNorm, rotary embeddings,
// projections with optional LoRA, and the SwiGLU MLP. They follow transformers'
// LlamaForCausalLM exactly (same formulas, same float32 order of operations where it matters),
// so that a checkpoint gives the same logits here and there.
#pragma once

#include "formats/hf_config.h"

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>

namespace subq::model {

struct TokenScratch;  // model/token_decode.h

// y = weight * x / sqrt(mean(x^2) + eps), over the last dim.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// A bias-free linear map y = x W^T (W [out, in]), plus, when LoRA is attached,
// (alpha / r) * (x A^T) B^T with A [r, in] (Kaiming-uniform init) and B [out, r] (zero init, so
// attaching changes nothing until B is trained). Parameters: weight, lora_A, lora_B.
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(int64_t in, int64_t out, bool bias = false);
  at::Tensor forward(const at::Tensor& x);
  void attach_lora(int64_t r, double alpha);
  bool has_lora() const { return lora_A.defined(); }
  at::Tensor weight, bias, lora_A, lora_B;
  double lora_scaling = 0;
};
TORCH_MODULE(Projection);

// Whether the run-time switch `name` is on: unset, or set to anything but "0".
bool env_switch_on(const char* name);

// A decode step's few rows: x f32 with at most kMatvecMaxRows rows (of its last dim, which is
// contiguous), and no autograd through x or w. There each small op costs more in dispatch (a
// few microseconds) than in arithmetic, so the model's fast paths (linear_any's matvec, RMSNorm,
// RoPE, the fused projections) do in one call what the general code does in several.
bool decode_rows(const at::Tensor& x, const at::Tensor& w = {});

// y = x W^T + b for x [..., in] and W [out, in] of f32 or bf16. A bf16 W is read as bf16 and
// computed in f32: through subq's matvec when x has at most kMatvecMaxRows rows (a decode
// step, memory-bound: half the bytes), else by converting W to f32 for the GEMM (a prefill,
// compute-bound). f32 W with a few rows (and no autograd) also goes through subq's matvec,
// unless SUBQ_MATVEC_F32=0; with many rows it runs on the GEMM chosen for this machine:
// libtorch's (MKL) or subq's (torch_ops::linear_gemm_backend, SUBQ_GEMM).
at::Tensor linear_any(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});

// cos and sin of the rotary angles for positions [pos0, pos0 + T), [T, head_dim] each, computed
// as transformers does: inv_freq = 1 / theta^(2i / d) in float32 (then scaled by the config's
// rope type: linear, llama3 or yarn, as modeling_rope_utils.py), angles = pos * inv_freq,
// duplicated to both halves; yarn also scales cos and sin by its attention factor.
struct RopeTable {
  at::Tensor cos, sin;
};
RopeTable make_rope_table(int64_t pos0, int64_t T, const formats::LlamaConfig& config);
// The inverse frequencies [head_dim / 2] and the attention factor of the config's RoPE.
std::pair<at::Tensor, double> rope_inv_freq(const formats::LlamaConfig& config);
// x [B, T, H, hd] -> x * cos + rotate_half(x) * sin.
at::Tensor apply_rope(const at::Tensor& x, const RopeTable& rope);

// down(silu(gate(x)) * up(x)).
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t hidden, int64_t intermediate, bool bias = false);
  at::Tensor forward(const at::Tensor& x);
  // The token path (model/token_decode.h): whether it can run this MLP (no LoRA), and
  // y [hidden] = mlp(x [hidden]) on raw rows.
  bool token_decode_ready() const;
  void decode_token(const float* x, float* y, TokenScratch& s);
  Projection gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

// The weights of bias- and LoRA-free projections that lie back to back in one storage (the arena
// of DecoderModelImpl::set_weights_dtype) as one [sum of rows, in] matrix: a decode step then
// reads them in one matvec. Undefined when they do not.
at::Tensor adjacent_rows(std::initializer_list<const ProjectionImpl*> projections);
// The rows of that matrix (the first weight's data pointer starts it), or 0 when they are not.
int64_t adjacent_row_count(std::initializer_list<const ProjectionImpl*> projections);

// One row each, the loops of the decode fast paths (and of model/token_decode.cc):
//   rms_norm_row:  y = w * x / sqrt(mean(x^2) + eps)                 x, w, y [d]
//   rope_row:      y = x * cos + rotate_half(x) * sin                x, cos, sin, y [hd]
//   silu_mul_row:  y = silu(gate) * up                               [n]
void rms_norm_row(const float* x, const float* w, int64_t d, double eps, float* y);
void rope_row(const float* x, const float* cos, const float* sin, int64_t hd, float* y);
void silu_mul_row(const float* gate, const float* up, int64_t n, float* y);

// N(0, 0.02) as transformers' initializer_range: for a model built from a config, not loaded.
void init_normal(at::Tensor& t, double std = 0.02);

// While one lives on this thread, init_normal leaves tensors as they are: load_model builds a
// model whose every weight the checkpoint then overwrites, and drawing the random weights of a
// 135M-parameter model first took about a second.
class SkipInitGuard {
 public:
  SkipInitGuard();
  ~SkipInitGuard();
  SkipInitGuard(const SkipInitGuard&) = delete;
  SkipInitGuard& operator=(const SkipInitGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace subq::model
