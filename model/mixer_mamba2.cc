// Mamba-2's block (Dao & Gu 2024) as a token mixer, on subq's ops: the SSD scan is simple_gla
// (a scalar decay per head and token), and the causal conv is short_conv.
//
//   in_proj(x) = [z (d_inner), xBC (d_inner + 2 G N), dt (Hm)]
//   xBC = silu(conv(xBC)); x, B, C = split(xBC)      x [B, T, Hm, P], B, C [B, T, G, N]
//   dt = softplus(dt + dt_bias); A = -exp(A_log)     log decay g = dt * A [B, T, Hm]
//   y = SSD(q = C, k = B, v = x * dt, g; scale 1) + D * x
//   out = out_proj(RMSNorm_grouped(y * silu(z)))
// The G groups of B and C are the key heads; head h reads group h / (Hm / G), as Mamba-2 does.
#include <torch/torch.h>

#include <cmath>

#include "model/mixer_impls.h"
#include "torch/ops.h"

namespace subq::model {
namespace {

struct Mamba2Cache : LayerCache {
  at::Tensor conv;  // f32 [B, W - 1, conv_dim]
  at::Tensor ssm;   // f32 [B, Hm, N, P]
  size_t nbytes() const override { return conv.nbytes() + ssm.nbytes(); }
};

class Mamba2Mixer : public MixerImpl {
 public:
  Mamba2Mixer(const MixerSpec& spec, const LlamaConfig& c)
      : MixerImpl(spec),
        d_inner_(spec.expand * c.hidden_size),
        P_(spec.mamba_head_dim),
        Hm_(d_inner_ / P_),
        G_(spec.n_groups),
        N_(spec.state_size),
        conv_dim_(d_inner_ + 2 * G_ * N_),
        eps_(c.rms_norm_eps) {
    in_proj =
        register_module("in_proj", Projection(c.hidden_size, 2 * d_inner_ + 2 * G_ * N_ + Hm_));
    out_proj = register_module("out_proj", Projection(d_inner_, c.hidden_size));
    const double bound = 1.0 / std::sqrt(static_cast<double>(spec.conv_width));
    conv_weight = register_parameter("conv_weight", torch::empty({conv_dim_, spec.conv_width}));
    conv_bias = register_parameter("conv_bias", torch::empty({conv_dim_}));
    dt_bias = register_parameter("dt_bias", torch::empty({Hm_}));
    A_log = register_parameter("A_log", torch::empty({Hm_}));
    D = register_parameter("D", torch::ones({Hm_}));
    norm_weight = register_parameter("norm_weight", torch::ones({d_inner_}));
    torch::NoGradGuard no_grad;
    conv_weight.uniform_(-bound, bound);
    conv_bias.uniform_(-bound, bound);
    // Mamba-2's init: A uniform in [1, 16]; dt log-uniform in [0.001, 0.1], stored through the
    // inverse softplus so that softplus(dt_bias) = dt.
    A_log.copy_(torch::empty({Hm_}).uniform_(1, 16).log());
    const at::Tensor dt =
        (torch::rand({Hm_}) * (std::log(0.1) - std::log(0.001)) + std::log(0.001)).exp();
    dt_bias.copy_(dt + torch::log(-torch::expm1(-dt)));
  }

  at::Tensor forward(const at::Tensor& x, const MixerContext&, LayerCache* cache) override {
    const int64_t B = x.size(0), T = x.size(1);
    auto* mc = static_cast<Mamba2Cache*>(cache);
    const at::Tensor zxbcdt = in_proj(x);
    const at::Tensor z = zxbcdt.narrow(-1, 0, d_inner_);
    const at::Tensor xbc_raw = zxbcdt.narrow(-1, d_inner_, conv_dim_).contiguous();
    const at::Tensor dt_raw = zxbcdt.narrow(-1, d_inner_ + conv_dim_, Hm_);
    std::optional<at::Tensor> conv_h0;
    if (mc) conv_h0 = mc->conv;
    auto [xbc, conv_state] = torch_ops::short_conv(xbc_raw, conv_weight, conv_bias, conv_h0,
                                                   /*silu=*/true, std::nullopt, mc != nullptr);
    const at::Tensor xs = xbc.narrow(-1, 0, d_inner_).view({B, T, Hm_, P_});
    const at::Tensor Bm = xbc.narrow(-1, d_inner_, G_ * N_).view({B, T, G_, N_}).contiguous();
    const at::Tensor Cm =
        xbc.narrow(-1, d_inner_ + G_ * N_, G_ * N_).view({B, T, G_, N_}).contiguous();
    const at::Tensor dt = torch::softplus(dt_raw + dt_bias);  // [B, T, Hm]
    torch_ops::LinearArgs a;
    a.g = (dt * -torch::exp(A_log)).contiguous();
    a.scale = 1.0;
    a.chunk_size = spec_.chunk_size;
    if (mc) {
      a.initial_state = mc->ssm;
      a.output_final_state = true;
      a.mode = T == 1 ? "recurrent" : "chunk";
    }
    const at::Tensor v = (xs * dt.unsqueeze(-1)).contiguous();
    auto [y, ssm_state, unused] = torch_ops::linear_attention(Cm, Bm, v, a);
    if (mc) {
      mc->conv = conv_state;
      mc->ssm = ssm_state;
    }
    at::Tensor out = y + xs * D.view({1, 1, Hm_, 1});
    out = out.reshape({B, T, d_inner_}) * torch::silu(z);
    // Gated RMSNorm over each group's d_inner / G channels (Mamba-2's RMSNormGated).
    const at::Tensor grouped = out.view({B, T, G_, d_inner_ / G_});
    const at::Tensor normed =
        grouped * torch::rsqrt(grouped.pow(2).mean(-1, /*keepdim=*/true) + eps_);
    return out_proj(normed.view({B, T, d_inner_}) * norm_weight);
  }

  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t, int64_t) const override {
    auto c = std::make_unique<Mamba2Cache>();
    c->conv = torch::zeros({batch, spec_.conv_width - 1, conv_dim_});
    c->ssm = torch::zeros({batch, Hm_, N_, P_});
    return c;
  }

  CacheCost cache_cost(int64_t) const override {
    return {
        0, static_cast<size_t>((spec_.conv_width - 1) * conv_dim_ + Hm_ * N_ * P_) * sizeof(float)};
  }

  Projection in_proj{nullptr}, out_proj{nullptr};
  at::Tensor conv_weight, conv_bias, dt_bias, A_log, D, norm_weight;

 private:
  int64_t d_inner_, P_, Hm_, G_, N_, conv_dim_;
  double eps_;
};

}  // namespace

std::shared_ptr<MixerImpl> make_mamba2_mixer(const MixerSpec& spec, const LlamaConfig& config) {
  return std::make_shared<Mamba2Mixer>(spec, config);
}

}  // namespace subq::model
