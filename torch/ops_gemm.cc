// Linear layers on subq's GEMM (subq/gemm.h) as a differentiable torch op, subq::linear, and the
// run-time choice between it and libtorch's GEMM for the model's layers.
//
//   x [..., in], weight [out, in], bias [out]  ->  y [..., out] = x weightᵀ + bias   (f32)
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "subq/gemm.h"
#include "subq/threads.h"
#include "torch/ops.h"
#include "torch/torch_bridge.h"

namespace subq::torch_ops {
namespace {

constexpr const char* kOp = "subq::linear";

void check_inputs(const at::Tensor& x, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias) {
  SUBQ_CHECK_ARG(weight.dim() == 2 && weight.scalar_type() == at::kFloat, kOp, "weight",
                 "a 2-D f32 tensor [out, in]", weight.dim(), "-D ",
                 at::toString(weight.scalar_type()));
  SUBQ_CHECK_ARG(x.dim() >= 1 && x.size(-1) == weight.size(1) && x.scalar_type() == at::kFloat, kOp,
                 "x", detail::concat("an f32 tensor [..., ", weight.size(1), "]"), x.sizes(), " ",
                 at::toString(x.scalar_type()));
  if (bias)
    SUBQ_CHECK_ARG(
        bias->dim() == 1 && bias->size(0) == weight.size(0) && bias->scalar_type() == at::kFloat,
        kOp, "bias", detail::concat("an f32 tensor [", weight.size(0), "]"), bias->sizes());
}

// The three products of a linear layer y = x Wᵀ, x2 [rows, in], W [out, in], dy [rows, out].
// y = x2 · Wᵀ (+ bias)
at::Tensor linear_2d(const at::Tensor& x2, const at::Tensor& weight,
                     const std::optional<at::Tensor>& bias) {
  at::Tensor y = at::empty({x2.size(0), weight.size(0)}, x2.options());
  gemm(to_view(x2, kOp, "x"), to_view(weight, kOp, "weight").transposed(), to_view(y, kOp, "y"));
  if (bias) y.add_(*bias);
  return y;
}
// dx = dy · W
void input_grad(const at::Tensor& dy, const at::Tensor& weight, const at::Tensor& dx) {
  gemm(to_view(dy, kOp, "dy"), to_view(weight, kOp, "weight"), to_view(dx, kOp, "dx"));
}
// dW = dyᵀ · x2
void weight_grad(const at::Tensor& dy, const at::Tensor& x2, const at::Tensor& dw) {
  gemm(to_view(dy, kOp, "dy").transposed(), to_view(x2, kOp, "x"), to_view(dw, kOp, "dweight"));
}

at::Tensor linear_forward_op(const at::Tensor& x, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias) {
  check_inputs(x, weight, bias);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = weight.size(0);
  return linear_2d(x.reshape({-1, weight.size(1)}), weight, bias).view(shape);
}

class LinearFunction : public torch::autograd::Function<LinearFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& x, const at::Tensor& weight,
                                                const std::optional<at::Tensor>& bias) {
    ctx->save_for_backward({x, weight, bias.value_or(at::Tensor())});
    return {linear_forward_op(x, weight, bias)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor &x = s[0], &weight = s[1];
    const int64_t out = weight.size(0), in = weight.size(1);
    // dy [rows, out], x2 [rows, in]
    at::Tensor dx, dw, db;
    if (!grads[0].defined()) return {dx, dw, db};  // y was not used
    const at::Tensor dy = grads[0].reshape({-1, out}).contiguous();
    if (wants_grad(x)) {
      dx = at::empty({dy.size(0), in}, dy.options());
      input_grad(dy, weight, dx);
      dx = dx.view(x.sizes());
    }
    if (wants_grad(weight)) {
      dw = at::empty({out, in}, dy.options());
      weight_grad(dy, x.reshape({-1, in}), dw);
    }
    if (s[2].defined() && wants_grad(s[2])) db = dy.sum(0);
    return {dx, dw, db};
  }
};

// ---- the choice ----

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A typical layer of the models we run (an MLP up-projection of a small decoder, a prefill
// chunk of rows): forward and both backward products, on each GEMM, alternated so that both
// see the same machine state, median of 5. About 50 ms in all on a 2-core machine.
GemmChoiceTimes time_probe() {
  constexpr int64_t kRows = 256, kIn = 576, kOut = 1536;
  const at::Tensor x = at::randn({kRows, kIn}), w = at::randn({kOut, kIn});
  const at::Tensor dy = at::randn({kRows, kOut});
  auto run_torch = [&] {
    (void)at::linear(x, w);
    (void)at::mm(dy, w);
    (void)at::mm(dy.t(), x);
  };
  at::Tensor dx = at::empty({kRows, kIn}), dw = at::empty({kOut, kIn});
  auto run_subq = [&] {
    (void)linear_2d(x, w, std::nullopt);
    input_grad(dy, w, dx);
    weight_grad(dy, x, dw);
  };
  auto ms = [](const auto& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  run_torch();  // warm-up: first-call set-up of either library
  run_subq();
  std::vector<double> t, s;
  for (int r = 0; r < 5; ++r) {
    t.push_back(ms(run_torch));
    s.push_back(ms(run_subq));
  }
  return {median(t), median(s)};
}

struct Choice {
  GemmBackend backend = GemmBackend::kTorch;
  GemmChoiceTimes times;
};

// Made once per thread count (the two GEMMs need not scale alike).
Choice choice() {
  static std::mutex mu;
  static std::map<int, Choice> made;
  const int threads = subq::num_threads();
  std::lock_guard<std::mutex> lock(mu);
  auto it = made.find(threads);
  if (it != made.end()) return it->second;
  Choice r;
  const std::string v = gemm_setting();
  if (v != "auto") {
    r.backend = v == "subq" ? GemmBackend::kSubq : GemmBackend::kTorch;
  } else {
    r.times = time_probe();
    r.backend = r.times.subq_ms < r.times.torch_ms ? GemmBackend::kSubq : GemmBackend::kTorch;
  }
  made.emplace(threads, r);
  return r;
}

}  // namespace

std::string gemm_setting() {
  const char* env = std::getenv("SUBQ_GEMM");
  const std::string v = env && *env ? env : "auto";
  SUBQ_CHECK(v == "auto" || v == "torch" || v == "subq",
             "SUBQ_GEMM: expected torch, subq or auto, got \"", v, "\"");
  return v;
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias) {
  return LinearFunction::apply(x, weight, bias)[0];
}

GemmBackend linear_gemm_backend() {
  return choice().backend;
}

GemmChoiceTimes gemm_choice_times() {
  return choice().times;
}

const char* gemm_backend_name(GemmBackend b) {
  return b == GemmBackend::kSubq ? "subq" : "torch";
}

TORCH_LIBRARY_FRAGMENT(subq, m) {
  define(m, "linear(Tensor x, Tensor weight, Tensor? bias=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(subq, CPU, m) {
  m.impl("linear", &linear_forward_op);
}

TORCH_LIBRARY_IMPL(subq, Autograd, m) {
  m.impl("linear", &linear);
}

}  // namespace subq::torch_ops
