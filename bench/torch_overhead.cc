// What the torch path costs on top of the core ops: the same forward + backward, timed in one
// process, alternating, (a) calling subq's core functions on preallocated buffers and (b) going
// through torch.ops.subq.* (the c10 dispatcher, autograd's graph, output allocation, the
// backward engine). Shapes are the bench shapes of the earlier issues: exact causal attention
// and simple_gla in chunk mode, B 1, H 8, D 128, T 4096, fp32.
//
//   subq_torch_overhead [reps]        prints one line per op: medians and the ratio torch / core
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "subq/flash.h"
#include "subq/linear.h"
#include "subq/threads.h"
#include "torch/torch_bridge.h"

namespace {

using subq::torch_ops::to_view;

double seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Alternates core and torch runs so that both see the same machine state; prints medians.
void compare(const char* name, int reps, const std::function<void()>& core,
             const std::function<void()>& torch_path) {
  core();
  torch_path();  // warm-up: page faults, thread pool, autograd engine threads
  std::vector<double> tc, tt;
  for (int r = 0; r < reps; ++r) {
    tc.push_back(seconds(core));
    tt.push_back(seconds(torch_path));
  }
  const double c = median(tc), t = median(tt);
  std::printf(
      "%-32s core %9.2f ms   torch %9.2f ms   torch/core %.3f   (median of %d, %d threads)\n", name,
      c * 1e3, t * 1e3, t / c, reps, subq::num_threads());
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::stoi(argv[1]) : 7;
  const int64_t B = 1, T = 4096, H = 8, D = 128;
  torch::manual_seed(0);
  at::Tensor q = torch::randn({B, T, H, D}), k = torch::randn({B, T, H, D}),
             v = torch::randn({B, T, H, D}), dout = torch::randn({B, T, H, D});
  const char* op = "bench";

  // ---- exact attention, causal ----
  {
    at::Tensor out = torch::empty_like(q), lse = torch::empty({B, H, T});
    at::Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
    subq::FlashOptions fo;
    fo.causal = true;
    auto core = [&] {
      subq::flash_attention_forward(to_view(q, op, "q"), to_view(k, op, "k"), to_view(v, op, "v"),
                                    to_view(out, op, "out"), to_view(lse, op, "lse"), fo);
      subq::flash_attention_backward(to_view(q, op, "q"), to_view(k, op, "k"), to_view(v, op, "v"),
                                     to_view(out, op, "out"), to_view(lse, op, "lse"),
                                     to_view(dout, op, "dout"), to_view(dq, op, "dq"),
                                     to_view(dk, op, "dk"), to_view(dv, op, "dv"), fo);
    };
    auto handle =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("subq::flash_attention", "")
            .typed<std::tuple<at::Tensor, at::Tensor>(
                const at::Tensor&, const at::Tensor&, const at::Tensor&, std::optional<double>,
                bool, int64_t, int64_t, double, const std::optional<at::Tensor>&,
                const std::optional<at::Tensor>&, const std::optional<at::Tensor>&)>();
    at::Tensor qg = q.clone().requires_grad_(), kg = k.clone().requires_grad_(),
               vg = v.clone().requires_grad_();
    auto via_torch = [&] {
      for (auto* t : {&qg, &kg, &vg}) t->mutable_grad() = at::Tensor();
      auto [o, l] = handle.call(qg, kg, vg, std::nullopt, true, -1, -1, 0., std::nullopt,
                                std::nullopt, std::nullopt);
      o.backward(dout);
    };
    compare("flash_attention fwd+bwd T4096", reps, core, via_torch);
  }

  // ---- simple_gla, chunk mode ----
  {
    at::Tensor g = -torch::rand({B, T, H}) * 0.1;
    at::Tensor out = torch::empty_like(v);
    at::Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v),
               dg = torch::empty_like(g);
    subq::LinearAttentionOptions lo;
    lo.g = to_view(g, op, "g");
    auto core = [&] {
      subq::linear_attention_forward(to_view(q, op, "q"), to_view(k, op, "k"), to_view(v, op, "v"),
                                     to_view(out, op, "out"), {}, {}, lo);
      subq::LinearAttentionGrads gr;
      gr.dq = to_view(dq, op, "dq");
      gr.dk = to_view(dk, op, "dk");
      gr.dv = to_view(dv, op, "dv");
      gr.dg = to_view(dg, op, "dg");
      subq::linear_attention_backward(to_view(q, op, "q"), to_view(k, op, "k"), to_view(v, op, "v"),
                                      to_view(dout, op, "dout"), {}, {}, gr, lo);
    };
    using OT = const std::optional<at::Tensor>&;
    auto handle = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("subq::linear_attention", "")
                      .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                          const at::Tensor&, const at::Tensor&, const at::Tensor&, OT, OT, OT, OT,
                          OT, OT, std::optional<double>, bool, double, bool, c10::string_view,
                          int64_t, bool, OT, bool)>();
    at::Tensor qg = q.clone().requires_grad_(), kg = k.clone().requires_grad_(),
               vg = v.clone().requires_grad_(), gg = g.clone().requires_grad_();
    auto via_torch = [&] {
      for (auto* t : {&qg, &kg, &vg, &gg}) t->mutable_grad() = at::Tensor();
      auto [o, s, z] = handle.call(qg, kg, vg, gg, std::nullopt, std::nullopt, std::nullopt,
                                   std::nullopt, std::nullopt, std::nullopt, false, 1e-6, true,
                                   "chunk", 64, false, std::nullopt, false);
      o.backward(dout);
    };
    compare("simple_gla chunk fwd+bwd T4096", reps, core, via_torch);
  }
  return 0;
}
