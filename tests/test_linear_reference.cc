// The float64 reference of linear attention against central finite differences of its own
// forward: every input and option that has a gradient (q, k, v, g, g_gamma, gk, gv, h0, z0),
// through out, the final state and z.
#include <gtest/gtest.h>

#include <string>

#include "subq/linear.h"
#include "tests/linear_util.h"

namespace subq {
namespace {

using test::Gate;
using test::LinearCase;
using test::LinearProblem;

double dot_all(const TensorView& a, const TensorView& b) {
  if (!a.defined() || !b.defined()) return 0;
  const auto x = test::values(a), y = test::values(b);
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

void check_by_finite_differences(LinearCase c, int64_t nseq = -1,
                                 const TensorView& cu_seqlens = TensorView()) {
  c.dt = DType::kF64;
  LinearProblem p(c, nseq);
  LinearAttentionOptions opt = p.opt;
  opt.impl = Impl::kRef;
  opt.cu_seqlens = cu_seqlens;
  // L = <dout, out> + <dht, h_T> + <dzt, z_T>
  auto loss = [&] {
    test::LinearResult r = test::run_forward(p, opt);
    return dot_all(p.dout, r.out) + dot_all(p.dht, r.ht) + dot_all(p.dzt, r.zt);
  };
  test::LinearGradTensors g = test::run_backward(p, opt);
  struct Param {
    const char* name;
    Tensor* x;
    Tensor* grad;
  };
  std::vector<Param> params = {{"q", &p.q, &g.dq}, {"k", &p.k, &g.dk}, {"v", &p.v, &g.dv}};
  if (p.g.defined()) params.push_back({"g", &p.g, &g.dg});
  if (p.gamma.defined()) params.push_back({"g_gamma", &p.gamma, &g.dg_gamma});
  if (p.gk.defined()) params.push_back({"gk", &p.gk, &g.dgk});
  if (p.gv.defined()) params.push_back({"gv", &p.gv, &g.dgv});
  if (p.h0.defined()) params.push_back({"h0", &p.h0, &g.dh0});
  if (p.z0.defined()) params.push_back({"z0", &p.z0, &g.dz0});
  const double eps = 1e-6;
  for (const Param& pr : params) {
    double* x = pr.x->data_as<double>();
    const auto analytic = test::values(*pr.grad);
    std::vector<double> numeric(analytic.size());
    for (int64_t i = 0; i < pr.x->numel(); ++i) {
      const double x0 = x[i];
      x[i] = x0 + eps;
      const double up = loss();
      x[i] = x0 - eps;
      const double down = loss();
      x[i] = x0;
      numeric[i] = (up - down) / (2 * eps);
    }
    EXPECT_LE(test::rel_rms(analytic, numeric), 1e-6) << pr.name;
  }
}

LinearCase small() {
  LinearCase c;
  c.B = 2;
  c.T = 6;
  c.Hk = 1;
  c.H = 2;  // two value heads share a key head
  c.K = 3;
  c.V = 4;
  c.h0 = true;
  return c;
}

TEST(LinearReference, PlainAndGated) {
  for (Gate gate : {Gate::kNone, Gate::kScalar, Gate::kConstant, Gate::kKeyDim}) {
    SCOPED_TRACE(static_cast<int>(gate));
    LinearCase c = small();
    c.gate = gate;
    check_by_finite_differences(c);
  }
}

TEST(LinearReference, ValueGateWithAndWithoutKeyGate) {
  for (Gate gate : {Gate::kNone, Gate::kKeyDim}) {
    LinearCase c = small();
    c.gate = gate;
    c.gv = true;
    check_by_finite_differences(c);
  }
}

TEST(LinearReference, Normalized) {
  for (Gate gate : {Gate::kNone, Gate::kScalar}) {
    LinearCase c = small();
    c.normalize = true;
    c.gate = gate;
    check_by_finite_differences(c);
  }
}

TEST(LinearReference, VFirstStateAndNoInitialState) {
  LinearCase c = small();
  c.v_first = true;
  c.gate = Gate::kScalar;
  check_by_finite_differences(c);
  c.h0 = false;
  c.v_first = false;
  check_by_finite_differences(c);
}

TEST(LinearReference, NonCausal) {
  LinearCase c = small();
  c.causal = false;
  c.h0 = false;
  check_by_finite_differences(c);
  c.normalize = true;
  check_by_finite_differences(c);
}

TEST(LinearReference, Varlen) {
  LinearCase c = small();
  c.B = 1;
  c.T = 9;
  c.gate = Gate::kKeyDim;
  Tensor cu = Tensor::empty({4}, DType::kI32);
  const int offs[] = {0, 4, 4, 8};  // an empty sequence, and one uncovered row at the end
  for (int64_t i = 0; i < 4; ++i) set_element(cu, {i}, offs[i]);
  check_by_finite_differences(c, 3, cu);
}

TEST(LinearReference, RetnetGammas) {
  Tensor g = retnet_g_gamma(4);
  for (int64_t h = 0; h < 4; ++h)
    EXPECT_NEAR(get_element(g, {h}), std::log(1.0 - std::pow(2.0, -5.0 - h)), 1e-7);
}

}  // namespace
}  // namespace subq
