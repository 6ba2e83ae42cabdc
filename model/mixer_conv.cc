// The short-convolution mixer, Zoology's BaseConv: y = o_proj(mul_proj(x) * conv(in_proj(x))),
// a causal depthwise convolution of width W over the hidden dims, gated by a projection. Its
// cache is the last W - 1 inputs of the convolution.
#include <torch/torch.h>

#include "model/mixer_impls.h"
#include "torch/ops.h"

namespace subq::model {
namespace {

struct ConvCache : LayerCache {
  at::Tensor state;  // f32 [B, W - 1, hidden]
  size_t nbytes() const override { return state.nbytes(); }
};

class ConvMixer : public MixerImpl {
 public:
  ConvMixer(const MixerSpec& spec, const LlamaConfig& c) : MixerImpl(spec), D_(c.hidden_size) {
    in_proj = register_module("in_proj", Projection(D_, D_));
    mul_proj = register_module("mul_proj", Projection(D_, D_));
    o_proj = register_module("o_proj", Projection(D_, D_));
    attach_mixer_lora(spec, {{"o_proj", &o_proj}});
    // nn.Conv1d's default init: uniform(+-1 / sqrt(fan_in)), fan_in = W for a depthwise conv.
    const double bound = 1.0 / std::sqrt(static_cast<double>(spec.conv_width));
    conv_weight = register_parameter("conv_weight", torch::empty({D_, spec.conv_width}));
    conv_bias = register_parameter("conv_bias", torch::empty({D_}));
    torch::NoGradGuard no_grad;
    conv_weight.uniform_(-bound, bound);
    conv_bias.uniform_(-bound, bound);
  }

  at::Tensor forward(const at::Tensor& x, const MixerContext&, LayerCache* cache) override {
    const at::Tensor u = in_proj(x).contiguous();
    std::optional<at::Tensor> h0;
    if (cache) h0 = static_cast<ConvCache&>(*cache).state;
    auto [conv, state] = torch_ops::short_conv(u, conv_weight, conv_bias, h0, /*silu=*/false,
                                               std::nullopt, /*output_final_state=*/cache);
    if (cache) static_cast<ConvCache&>(*cache).state = state;
    return o_proj(mul_proj(x) * conv);
  }

  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t, int64_t) const override {
    auto c = std::make_unique<ConvCache>();
    c->state = torch::zeros({batch, spec_.conv_width - 1, D_});
    return c;
  }

  CacheCost cache_cost(int64_t) const override {
    return {0, static_cast<size_t>((spec_.conv_width - 1) * D_) * sizeof(float)};
  }

  Projection in_proj{nullptr}, mul_proj{nullptr}, o_proj{nullptr};
  at::Tensor conv_weight, conv_bias;

 private:
  int64_t D_;
};

}  // namespace

std::shared_ptr<MixerImpl> make_conv_mixer(const MixerSpec& spec, const LlamaConfig& config) {
  return std::make_shared<ConvMixer>(spec, config);
}

}  // namespace subq::model
