#include "model/modules.h"

#include <torch/nn/functional.h>

#include <cmath>

namespace subq::model {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  // transformers: hidden * rsqrt(mean(hidden^2) + eps), then weight * (in float32).
  const at::Tensor variance = x.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x * torch::rsqrt(variance + eps));
}

ProjectionImpl::ProjectionImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", torch::empty({out, in}));
  init_normal(weight);
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
}

at::Tensor ProjectionImpl::forward(const at::Tensor& x) {
  at::Tensor y = torch::nn::functional::linear(x, weight, bias);
  if (has_lora())
    y = y + lora_scaling *
                torch::nn::functional::linear(torch::nn::functional::linear(x, lora_A), lora_B);
  return y;
}

void ProjectionImpl::attach_lora(int64_t r, double alpha) {
  const int64_t in = weight.size(1), out = weight.size(0);
  lora_A = register_parameter("lora_A", torch::empty({r, in}));
  // Kaiming-uniform with a = sqrt(5), as nn.Linear and PEFT initialise A.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  torch::NoGradGuard no_grad;
  lora_A.uniform_(-bound, bound);
  lora_B = register_parameter("lora_B", torch::zeros({out, r}));
  lora_scaling = alpha / static_cast<double>(r);
}

RopeTable make_rope_table(int64_t pos0, int64_t T, int64_t head_dim, double theta) {
  const at::Tensor exponent =
      torch::arange(0, head_dim, 2, torch::TensorOptions().dtype(torch::kInt64))
          .to(torch::kFloat32) /
      static_cast<double>(head_dim);
  const at::Tensor inv_freq = 1.0 / torch::pow(theta, exponent);
  const at::Tensor pos = torch::arange(pos0, pos0 + T, torch::TensorOptions().dtype(torch::kInt64))
                             .to(torch::kFloat32);
  const at::Tensor freqs = torch::outer(pos, inv_freq);  // [T, hd / 2]
  const at::Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

at::Tensor apply_rope(const at::Tensor& x, const RopeTable& rope) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  const at::Tensor rotated = torch::cat({-x2, x1}, -1);
  // cos, sin [T, hd] broadcast over [B, T, H, hd] as [T, 1, hd].
  return x * rope.cos.unsqueeze(1) + rotated * rope.sin.unsqueeze(1);
}

MlpImpl::MlpImpl(int64_t hidden, int64_t intermediate) {
  gate_proj = register_module("gate_proj", Projection(hidden, intermediate));
  up_proj = register_module("up_proj", Projection(hidden, intermediate));
  down_proj = register_module("down_proj", Projection(intermediate, hidden));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

void init_normal(at::Tensor& t, double std) {
  torch::NoGradGuard no_grad;
  t.normal_(0.0, std);
}

}  // namespace subq::model
