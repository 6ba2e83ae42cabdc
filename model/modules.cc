#include "model/modules.h"

#include "subq/matvec.h"
#include "torch/torch_bridge.h"

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

at::Tensor linear_any(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const int64_t in = w.size(1), out = w.size(0);
  const int64_t rows = in > 0 ? x.numel() / in : 0;
  const bool bf16 = w.scalar_type() == torch::kBFloat16;
  // f32 weights: libtorch's GEMV (MKL) was as fast or faster than subq's matvec here
  // (docs/performance.md); SUBQ_MATVEC_F32=1 uses subq's for them too.
  static const bool matvec_f32 = std::getenv("SUBQ_MATVEC_F32") != nullptr;
  if ((bf16 || matvec_f32) && rows >= 1 && rows <= kMatvecMaxRows &&
      x.scalar_type() == torch::kFloat32 &&
      !(torch::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad()))) {
    const at::Tensor x2 = x.reshape({rows, in}).contiguous();
    const at::Tensor wc = w.contiguous();
    at::Tensor y = torch::empty({rows, out});
    matvec(torch_ops::to_view(wc, "linear", "weight"), torch_ops::to_view(x2, "linear", "x"),
           torch_ops::to_view(y, "linear", "y"));
    if (b.defined()) y += b;
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = out;
    return y.view(shape);
  }
  return torch::nn::functional::linear(x, bf16 ? w.to(torch::kFloat32) : w, b);
}

at::Tensor ProjectionImpl::forward(const at::Tensor& x) {
  at::Tensor y = linear_any(x, weight, bias);
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

std::pair<at::Tensor, double> rope_inv_freq(const formats::LlamaConfig& c) {
  const int64_t dim = c.head_dim;
  const formats::RopeParameters& rp = c.rope;
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  // base^(2i / d) in float32, as every transformers rope function computes it.
  const at::Tensor exponent =
      torch::arange(0, dim, 2, torch::TensorOptions().dtype(torch::kInt64)).to(torch::kFloat32) /
      static_cast<double>(dim);
  const at::Tensor pos_freqs = torch::pow(c.rope_theta, exponent);
  at::Tensor inv_freq = 1.0 / pos_freqs;
  const int64_t original = rp.original_max_position_embeddings > 0
                               ? rp.original_max_position_embeddings
                               : c.max_position_embeddings;
  if (rp.type == "linear") return {inv_freq / rp.factor, 1.0};
  if (rp.type == "llama3") {
    // Wavelengths above original / low_freq_factor are divided by factor, those below
    // original / high_freq_factor kept, and those between interpolated smoothly.
    const double low_wavelen = static_cast<double>(original) / rp.low_freq_factor;
    const double high_wavelen = static_cast<double>(original) / rp.high_freq_factor;
    const at::Tensor wavelen = 2 * M_PI / inv_freq;
    at::Tensor scaled = torch::where(wavelen > low_wavelen, inv_freq / rp.factor, inv_freq);
    const at::Tensor smooth = (static_cast<double>(original) / wavelen - rp.low_freq_factor) /
                              (rp.high_freq_factor - rp.low_freq_factor);
    const at::Tensor smoothed = (1 - smooth) * scaled / rp.factor + smooth * scaled;
    const at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    return {torch::where(medium, smoothed, scaled), 1.0};
  }
  if (rp.type == "yarn") {
    const auto get_mscale = [](double scale, double mscale) {
      return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
    };
    double attention_factor;
    if (rp.attention_factor) {
      attention_factor = *rp.attention_factor;
    } else if (rp.mscale && rp.mscale_all_dim) {
      attention_factor =
          get_mscale(rp.factor, *rp.mscale) / get_mscale(rp.factor, *rp.mscale_all_dim);
    } else {
      attention_factor = get_mscale(rp.factor, 1.0);
    }
    // The dims whose wavelength turns fewer than beta_slow (more than beta_fast) times over the
    // original context are interpolated (extrapolated), with a linear ramp between.
    const auto correction_dim = [&](double rotations) {
      return (static_cast<double>(dim) *
              std::log(static_cast<double>(original) / (rotations * 2 * M_PI))) /
             (2 * std::log(c.rope_theta));
    };
    double low = correction_dim(rp.beta_fast), high = correction_dim(rp.beta_slow);
    if (rp.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;  // no singularity
    const at::Tensor ramp = ((torch::arange(dim / 2, f32) - low) / (high - low)).clamp(0, 1);
    const at::Tensor extrapolation = 1 - ramp;
    const at::Tensor interpolation = 1.0 / (rp.factor * pos_freqs);
    return {interpolation * (1 - extrapolation) + inv_freq * extrapolation, attention_factor};
  }
  return {inv_freq, 1.0};
}

RopeTable make_rope_table(int64_t pos0, int64_t T, const formats::LlamaConfig& config) {
  const auto [inv_freq, attention_factor] = rope_inv_freq(config);
  const at::Tensor pos = torch::arange(pos0, pos0 + T, torch::TensorOptions().dtype(torch::kInt64))
                             .to(torch::kFloat32);
  const at::Tensor freqs = torch::outer(pos, inv_freq);  // [T, hd / 2]
  const at::Tensor emb = torch::cat({freqs, freqs}, -1);
  if (attention_factor == 1.0) return {emb.cos(), emb.sin()};
  return {emb.cos() * attention_factor, emb.sin() * attention_factor};
}

at::Tensor apply_rope(const at::Tensor& x, const RopeTable& rope) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  const at::Tensor rotated = torch::cat({-x2, x1}, -1);
  // cos, sin [T, hd] broadcast over [B, T, H, hd] as [T, 1, hd].
  return x * rope.cos.unsqueeze(1) + rotated * rope.sin.unsqueeze(1);
}

MlpImpl::MlpImpl(int64_t hidden, int64_t intermediate, bool bias) {
  gate_proj = register_module("gate_proj", Projection(hidden, intermediate, bias));
  up_proj = register_module("up_proj", Projection(hidden, intermediate, bias));
  down_proj = register_module("down_proj", Projection(intermediate, hidden, bias));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) {
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

namespace {
thread_local bool t_skip_init = false;
}  // namespace

SkipInitGuard::SkipInitGuard() : previous_(t_skip_init) {
  t_skip_init = true;
}
SkipInitGuard::~SkipInitGuard() {
  t_skip_init = previous_;
}

void init_normal(at::Tensor& t, double std) {
  if (t_skip_init) return;
  torch::NoGradGuard no_grad;
  t.normal_(0.0, std);
}

}  // namespace subq::model
