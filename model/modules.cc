#include "model/modules.h"

#include "subq/matvec.h"
#include "torch/ops.h"
#include "torch/torch_bridge.h"

#include <torch/nn/functional.h>

#include <cmath>
#include <string>

namespace subq::model {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

bool env_switch_on(const char* name) {
  const char* e = std::getenv(name);
  return e == nullptr || std::string(e) != "0";
}

bool decode_rows(const at::Tensor& x, const at::Tensor& w) {
  const int64_t d = x.dim() > 0 ? x.size(-1) : 0;
  return x.scalar_type() == torch::kFloat32 && d > 0 && x.numel() > 0 &&
         x.numel() / d <= kMatvecMaxRows && x.stride(-1) == 1 &&
         !(torch::GradMode::is_enabled() &&
           (x.requires_grad() || (w.defined() && w.requires_grad())));
}

void rms_norm_row(const float* x, const float* w, int64_t d, double eps, float* y) {
  // The formula of RMSNormImpl::forward (the sum in double: at least as accurate).
  double ss = 0;
  for (int64_t i = 0; i < d; ++i) ss += double(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(ss / double(d)) + float(eps));
  for (int64_t i = 0; i < d; ++i) y[i] = w[i] * (x[i] * inv);
}

void rope_row(const float* x, const float* cos, const float* sin, int64_t hd, float* y) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < hd; ++i) {
    const float rotated = i < half ? -x[i + half] : x[i - half];
    y[i] = x[i] * cos[i] + rotated * sin[i];
  }
}

void silu_mul_row(const float* gate, const float* up, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  if (decode_rows(x, weight) && x.is_contiguous() && weight.is_contiguous()) {
    // The formula below, one row at a time.
    const int64_t d = x.size(-1), rows = x.numel() / d;
    at::Tensor y = torch::empty_like(x);
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r)
      rms_norm_row(xp + r * d, weight.data_ptr<float>(), d, eps, yp + r * d);
    return y;
  }
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
  // f32 weights go through subq's matvec too: level with MKL's GEMV on Intel, 2.4-2.8x faster
  // on AMD Zen 5, where MKL's GEMV does not use AVX-512 (docs/performance.md, "Decode").
  // SUBQ_MATVEC_F32=0 sends them to libtorch's GEMV instead.
  static const bool matvec_f32 = env_switch_on("SUBQ_MATVEC_F32");
  if ((bf16 || matvec_f32) && decode_rows(x, w)) {
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
  const at::Tensor w32 = bf16 ? w.to(torch::kFloat32) : w;
  // Many rows: the GEMM chosen for this machine (SUBQ_GEMM; docs/performance.md, "GEMM").
  if (x.scalar_type() == torch::kFloat32 &&
      torch_ops::linear_gemm_backend() == torch_ops::GemmBackend::kSubq)
    return torch_ops::linear(x, w32, b.defined() ? std::optional<at::Tensor>(b) : std::nullopt);
  return torch::nn::functional::linear(x, w32, b);
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
  if (decode_rows(x) && x.dim() == 4 && rope.cos.is_contiguous() && rope.sin.is_contiguous()) {
    // x [B, T, H, hd] (any strides but the last), cos, sin [T, hd] -> a contiguous result.
    const int64_t B = x.size(0), T = x.size(1), H = x.size(2), hd = x.size(3);
    at::Tensor y = torch::empty({B, T, H, hd});
    const float* xp = x.data_ptr<float>();
    const float* cp = rope.cos.data_ptr<float>();
    const float* sp = rope.sin.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h)
          rope_row(xp + b * x.stride(0) + t * x.stride(1) + h * x.stride(2), cp + t * hd,
                   sp + t * hd, hd, yp + ((b * T + t) * H + h) * hd);
    return y;
  }
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
  const at::Tensor gu = decode_rows(x, gate_proj->weight)
                            ? adjacent_rows({gate_proj.ptr().get(), up_proj.ptr().get()})
                            : at::Tensor();
  if (gu.defined()) {
    // A decode step with gate and up back to back in memory: one matvec over both, and
    // silu(gate) * up in one loop.
    const int64_t I = gate_proj->weight.size(0);
    const at::Tensor y = linear_any(x, gu).reshape({-1, 2 * I}).contiguous();
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = I;
    at::Tensor h = torch::empty(shape);
    const float* yp = y.data_ptr<float>();
    float* hp = h.data_ptr<float>();
    for (int64_t r = 0; r < y.size(0); ++r)
      silu_mul_row(yp + r * 2 * I, yp + r * 2 * I + I, I, hp + r * I);
    return down_proj(h);
  }
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

at::Tensor adjacent_rows(std::initializer_list<const ProjectionImpl*> projections) {
  const int64_t rows = adjacent_row_count(projections);
  if (rows == 0) return {};
  const at::Tensor& w0 = (*projections.begin())->weight;
  return w0.as_strided({rows, w0.size(1)}, {w0.size(1), 1}, w0.storage_offset());
}

int64_t adjacent_row_count(std::initializer_list<const ProjectionImpl*> projections) {
  const ProjectionImpl* first = *projections.begin();
  const at::Tensor& w0 = first->weight;
  if (!w0.is_contiguous()) return 0;
  const int64_t in = w0.size(1);
  const char* next = static_cast<const char*>(w0.data_ptr());
  int64_t rows = 0;
  for (const ProjectionImpl* p : projections) {
    const at::Tensor& w = p->weight;
    if (p->bias.defined() || p->has_lora() || !w.is_contiguous() || w.size(1) != in ||
        w.scalar_type() != w0.scalar_type() || w.data_ptr() != next ||
        !w.storage().is_alias_of(w0.storage()))
      return 0;
    next += w.nbytes();
    rows += w.size(0);
  }
  return rows;
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
