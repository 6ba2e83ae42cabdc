// Linear attention and the linear + sliding-window hybrid: the teacher's q, k, v, o projections
// (so a student starts from the teacher's weights), RoPE, then learned feature maps on q and k
// (LoLCATs/Hedgehog), optional decay gates, and subq's linear_attention or hybrid_attention op.
//
//   q [B, T, H, hd], k, v [B, T, Hkv, hd] -> k, v repeated to H heads (GQA)
//   fq = phi_q(q), fk = phi_k(k) [B, T, H, F]
//   linear: out = linear_attention(fq, fk, v; g | gk, normalize)     state [B, H, F, hd]
//   hybrid: out = hybrid_attention(q, k, fq, fk, v; window, gamma)    HybridCache
#include <torch/torch.h>

#include "model/mixer_impls.h"
#include "subq/error.h"
#include "subq/feature_maps.h"
#include "subq/hybrid.h"
#include "torch/ops.h"
#include "torch/torch_bridge.h"

namespace subq::model {
namespace {

// GLA's gate: log-sigmoid of a projection, divided by 16 so that decays start near 1 (slow
// forgetting) and the chunked kernels' in-chunk products stay in range.
constexpr double kGateNormaliser = 16.0;
// GLA's low-rank bottleneck of the per-dim gate projection.
constexpr int64_t kGateRank = 16;

// One feature map's parameters: hedgehog W [H, hd, d'], t2r W [H, d', hd] and b [H, d'];
// the other maps have none.
class FeatureMapImpl : public torch::nn::Module {
 public:
  FeatureMapImpl(const std::string& map, int64_t H, int64_t hd, int64_t fdim) {
    args_.map = map;
    torch::NoGradGuard no_grad;
    if (map == "hedgehog") {
      // A truncated identity (subq/feature_maps.h's hedgehog_identity): the map starts as
      // softmax over the first d' coordinates, a reasonable positive kernel before training.
      weight = register_parameter("weight", torch::eye(hd, fdim).expand({H, hd, fdim}).clone());
    } else if (map == "t2r") {
      weight = register_parameter("weight", torch::eye(fdim, hd).expand({H, fdim, hd}).clone());
      bias = register_parameter("bias", torch::zeros({H, fdim}));
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    args_.weight = weight.defined() ? std::optional<at::Tensor>(weight) : std::nullopt;
    args_.bias = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
    return torch_ops::feature_map(x.contiguous(), args_);
  }
  at::Tensor weight, bias;

 private:
  torch_ops::FeatureMapArgs args_;
};
TORCH_MODULE(FeatureMap);

// F, the size of phi(x): d' sets it for the learned maps, the input head dim for the others.
int64_t feature_map_size(const MixerSpec& s, int64_t hd) {
  if (s.feature_map == "hedgehog") return 2 * s.feature_dim;
  if (s.feature_map == "t2r") return s.feature_dim;
  FeatureMapOptions opt;
  opt.map = feature_map_from_name(s.feature_map);
  return feature_map_dim(opt, hd);
}

// What linear and hybrid share: projections, RoPE, feature maps, the scalar gate.
class FeatureMixerBase : public MixerImpl {
 protected:
  FeatureMixerBase(const MixerSpec& spec, const LlamaConfig& c)
      : MixerImpl(spec),
        H_(c.num_attention_heads),
        Hkv_(c.num_key_value_heads),
        hd_(c.head_dim),
        F_(feature_map_size(spec, c.head_dim)) {
    attn_ = register_attention_projections(*this, spec, c);
    feature_map_q =
        register_module("feature_map_q", FeatureMap(spec.feature_map, H_, hd_, spec.feature_dim));
    feature_map_k =
        register_module("feature_map_k", FeatureMap(spec.feature_map, H_, hd_, spec.feature_dim));
    if (spec.gate == "scalar")
      g_proj = register_module("g_proj", Projection(c.hidden_size, H_, true));
  }

  struct Qkv {
    at::Tensor q, k, v, fq, fk, g;  // g: [B, T, H] log decays, or undefined
  };
  Qkv project(const at::Tensor& x, const MixerContext& ctx) {
    Qkv r;
    auto qkv = attn_.project(x);
    r.q = qkv.q;
    r.k = qkv.k;
    r.v = repeat_kv(qkv.v, H_ / Hkv_).contiguous();
    if (spec_.rope) {
      r.q = apply_rope(r.q, *ctx.rope);
      r.k = apply_rope(r.k, *ctx.rope);
    }
    r.q = r.q.contiguous();
    r.k = repeat_kv(r.k, H_ / Hkv_).contiguous();
    r.fq = feature_map_q(r.q);
    r.fk = feature_map_k(r.k);
    if (g_proj) r.g = (torch::log_sigmoid(g_proj(x)) / kGateNormaliser).contiguous();
    return r;
  }

  int64_t H_, Hkv_, hd_, F_;

 public:
  AttentionProjections attn_;
  FeatureMap feature_map_q{nullptr}, feature_map_k{nullptr};
  Projection g_proj{nullptr};
};

struct LinearStateCache : LayerCache {
  at::Tensor state;  // f32 [B, H, F, hd]
  at::Tensor z;      // f32 [B, H, F] (normalize), else undefined
  size_t nbytes() const override { return state.nbytes() + (z.defined() ? z.nbytes() : 0); }
};

class LinearMixer : public FeatureMixerBase {
 public:
  LinearMixer(const MixerSpec& spec, const LlamaConfig& c) : FeatureMixerBase(spec, c) {
    if (spec.gate == "per_dim") {
      gk_down = register_module("gk_down", Projection(c.hidden_size, kGateRank));
      gk_up = register_module("gk_up", Projection(kGateRank, H_ * F_, true));
    }
  }

  at::Tensor forward(const at::Tensor& x, const MixerContext& ctx, LayerCache* cache) override {
    const int64_t B = x.size(0), T = x.size(1);
    Qkv p = project(x, ctx);
    torch_ops::LinearArgs a;
    if (p.g.defined()) a.g = p.g;
    if (gk_down)
      a.gk = (torch::log_sigmoid(gk_up(gk_down(x))) / kGateNormaliser).view({B, T, H_, F_});
    a.normalize = spec_.normalize;
    a.chunk_size = spec_.chunk_size;
    if (cache) {
      auto& st = static_cast<LinearStateCache&>(*cache);
      a.initial_state = st.state;
      if (st.z.defined()) a.initial_z = st.z;
      a.output_final_state = true;
      // One token: the recurrence is the cheaper form; both give the same numbers.
      a.mode = T == 1 ? "recurrent" : "chunk";
    }
    auto [out, state, z] = torch_ops::linear_attention(p.fq, p.fk, p.v, a);
    if (cache) {
      auto& st = static_cast<LinearStateCache&>(*cache);
      st.state = state;
      if (st.z.defined()) st.z = z;
    }
    return attn_.o_proj(out.reshape({B, T, H_ * hd_}));
  }

  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t, int64_t) const override {
    auto c = std::make_unique<LinearStateCache>();
    c->state = torch::zeros({batch, H_, F_, hd_});
    if (spec_.normalize) c->z = torch::zeros({batch, H_, F_});
    return c;
  }

  CacheCost cache_cost(int64_t) const override {
    return {0, static_cast<size_t>(H_ * F_ * (hd_ + (spec_.normalize ? 1 : 0))) * sizeof(float)};
  }

  Projection gk_down{nullptr}, gk_up{nullptr};
};

struct HybridLayerCache : LayerCache {
  subq::HybridCache cache;
  size_t nbytes() const override { return cache.nbytes(); }
};

class HybridMixer : public FeatureMixerBase {
 public:
  HybridMixer(const MixerSpec& spec, const LlamaConfig& c) : FeatureMixerBase(spec, c) {
    window_factor = register_parameter("window_factor", torch::full({H_}, kHybridWindowFactorInit));
  }

  at::Tensor forward(const at::Tensor& x, const MixerContext& ctx, LayerCache* cache) override {
    const int64_t B = x.size(0), T = x.size(1);
    Qkv p = project(x, ctx);
    const std::optional<at::Tensor> g =
        p.g.defined() ? std::optional<at::Tensor>(p.g) : std::nullopt;
    at::Tensor out;
    if (!cache) {
      out = torch_ops::hybrid_attention(p.q, p.k, p.fq, p.fk, p.v, window_factor, spec_.window,
                                        std::nullopt, g, std::nullopt, std::nullopt,
                                        spec_.chunk_size);
    } else {
      // Decode runs on the core's HybridCache (not differentiable, as decoding never is).
      torch::NoGradGuard no_grad;
      auto& hc = static_cast<HybridLayerCache&>(*cache).cache;
      HybridOptions opt;
      opt.window = spec_.window;
      opt.chunk_size = spec_.chunk_size;
      const at::Tensor wf = window_factor.detach().contiguous();
      opt.window_factor = torch_ops::to_view(wf, "hybrid", "window_factor");
      const char* op = "hybrid mixer";
      if (hc.seen[0] == 0) {
        // The first chunk: one forward over it, then the cache takes it in as a prefix.
        out = torch_ops::hybrid_attention(p.q, p.k, p.fq, p.fk, p.v, wf, spec_.window, std::nullopt,
                                          g, std::nullopt, std::nullopt, spec_.chunk_size);
        hybrid_cache_prefill(torch_ops::to_view(p.k, op, "k"), torch_ops::to_view(p.fk, op, "fk"),
                             torch_ops::to_view(p.v, op, "v"), torch_ops::to_view(g, op, "g"), hc,
                             opt);
      } else {
        // Later chunks go token by token: the step folds each key leaving the window into the
        // linear state, which a chunked call cannot do for a cache that already holds tokens.
        out = torch::empty({B, T, H_, hd_});
        for (int64_t t = 0; t < T; ++t) {
          auto one = [&](const at::Tensor& a) { return a.narrow(1, t, 1).contiguous(); };
          const at::Tensor q1 = one(p.q), k1 = one(p.k), fq1 = one(p.fq), fk1 = one(p.fk),
                           v1 = one(p.v);
          const at::Tensor g1 = p.g.defined() ? one(p.g) : at::Tensor();
          at::Tensor o1 = torch::empty({B, 1, H_, hd_});
          hybrid_attention_step(torch_ops::to_view(q1, op, "q"), torch_ops::to_view(k1, op, "k"),
                                torch_ops::to_view(fq1, op, "fq"),
                                torch_ops::to_view(fk1, op, "fk"), torch_ops::to_view(v1, op, "v"),
                                torch_ops::to_view(g1, op, "g"), hc,
                                torch_ops::to_view(o1, op, "out"), opt);
          out.narrow(1, t, 1).copy_(o1);
        }
      }
    }
    return attn_.o_proj(out.reshape({B, T, H_ * hd_}));
  }

  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t, int64_t) const override {
    auto c = std::make_unique<HybridLayerCache>();
    c->cache = HybridCache::create(batch, H_, hd_, F_, hd_, spec_.window);
    return c;
  }

  CacheCost cache_cost(int64_t) const override {
    // Ring of w tokens (k, v, fk, g) and the state S [H, F, hd + 1].
    const size_t ring = static_cast<size_t>(spec_.window * H_ * (hd_ + hd_ + F_ + 1));
    const size_t state = static_cast<size_t>(H_ * F_ * (hd_ + 1));
    return {0, (ring + state) * sizeof(float)};
  }

  at::Tensor window_factor;
};

}  // namespace

std::shared_ptr<MixerImpl> make_linear_mixer(const MixerSpec& spec, const LlamaConfig& config) {
  return std::make_shared<LinearMixer>(spec, config);
}

std::shared_ptr<MixerImpl> make_hybrid_mixer(const MixerSpec& spec, const LlamaConfig& config) {
  return std::make_shared<HybridMixer>(spec, config);
}

}  // namespace subq::model
