// Linear attention, fast kernels: every form (chunk, recurrent, parallel) against the float64
// reference over the shape grid, forward and backward, with every gate and option; prefill then
// continue against one prefill; varlen against a loop; decode steps against the forward; extreme
// gates; 1 thread against 2.
#include <gtest/gtest.h>

#include <sstream>
#include <tuple>

#include "subq/linear.h"
#include "subq/threads.h"
#include "tests/linear_util.h"

namespace subq {
namespace {

using test::Gate;
using test::LinearCase;
using test::LinearProblem;
using test::rel_rms;

const char* mode_name(LinearMode m) {
  return m == LinearMode::kChunk ? "chunk" : m == LinearMode::kRecurrent ? "recurrent" : "parallel";
}

void expect_close(const TensorView& a, const TensorView& b, double tol, const char* what) {
  if (!a.defined() && !b.defined()) return;
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  EXPECT_LE(rel_rms(a, b), tol) << what;
}

// Fast (in `mode`) against the reference: out, final state and z, and every gradient.
void expect_fast_matches_ref(const LinearCase& c, LinearMode mode, int64_t chunk = 64,
                             double tol = 1e-5, bool backward = true) {
  LinearProblem p(c);
  LinearAttentionOptions fast = p.opt, ref = p.opt;
  fast.mode = mode;
  fast.chunk_size = chunk;
  fast.impl = Impl::kFast;
  ref.impl = Impl::kRef;
  test::LinearResult f = test::run_forward(p, fast), r = test::run_forward(p, ref);
  expect_close(f.out, r.out, tol, "out");
  expect_close(f.ht, r.ht, tol, "final_state");
  expect_close(f.zt, r.zt, tol, "final_z");
  if (!backward) return;
  test::LinearGradTensors gf = test::run_backward(p, fast), gr = test::run_backward(p, ref);
  expect_close(gf.dq, gr.dq, tol, "dq");
  expect_close(gf.dk, gr.dk, tol, "dk");
  expect_close(gf.dv, gr.dv, tol, "dv");
  expect_close(gf.dg, gr.dg, tol, "dg");
  if (gf.dg_gamma.defined()) {
    // dg_gamma[h] is one number per head: the sum over every token of the per-token gate
    // gradients, which cancel by 10x or more. Its fp32 error is measured against the size of
    // those summands (the reference's per-token gradients for the same gate given as g), not
    // against the small sum.
    Tensor g = Tensor::empty({c.B, c.T, c.H}, DType::kF32);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t t = 0; t < c.T; ++t)
        for (int64_t h = 0; h < c.H; ++h) set_element(g, {b, t, h}, get_element(p.gamma, {h}));
    LinearAttentionOptions per_token = p.opt;
    per_token.impl = Impl::kRef;
    per_token.g_gamma = TensorView();
    per_token.g = g;
    LinearProblem pt = p;
    pt.gamma = Tensor();
    pt.g = g;
    const test::LinearGradTensors gt = test::run_backward(pt, per_token);
    for (int64_t h = 0; h < c.H; ++h) {
      double magnitude = 0;
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t t = 0; t < c.T; ++t) magnitude += std::abs(get_element(gt.dg, {b, t, h}));
      EXPECT_NEAR(get_element(gf.dg_gamma, {h}), get_element(gr.dg_gamma, {h}), tol * magnitude)
          << "dg_gamma, head " << h;
    }
  }
  expect_close(gf.dgk, gr.dgk, tol, "dgk");
  expect_close(gf.dgv, gr.dgv, tol, "dgv");
  expect_close(gf.dh0, gr.dh0, tol, "dh0");
  expect_close(gf.dz0, gr.dz0, tol, "dz0");
}

const LinearMode kModes[] = {LinearMode::kChunk, LinearMode::kRecurrent, LinearMode::kParallel};

// The grid: T in {1, 7, 63, 64, 65, 100, 257, 1000} x K = V in {16, 60, 64, 100, 128}, for
// simple_gla (scalar gate), with an initial state, in every form.
class LinearGrid : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, LinearMode>> {};

TEST_P(LinearGrid, SimpleGlaMatchesReference) {
  const auto [T, D, mode] = GetParam();
  if (test::quick() && T > 100) GTEST_SKIP() << "quick mode (sanitizer run)";
  LinearCase c;
  c.B = 1;
  c.T = T;
  c.Hk = c.H = 2;
  c.K = c.V = D;
  c.gate = Gate::kScalar;
  c.h0 = true;
  c.seed = static_cast<uint64_t>(T * 1000 + D);
  // The reference backward keeps every state: skip it on the largest shapes.
  expect_fast_matches_ref(c, mode, 64, 1e-5, T * D <= 257 * 128);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearGrid,
                         ::testing::Combine(::testing::Values(1, 7, 63, 64, 65, 100, 257, 1000),
                                            ::testing::Values(16, 60, 64, 100, 128),
                                            ::testing::ValuesIn(kModes)),
                         [](const auto& info) {
                           // Built with << rather than string + (a GCC 12 -Wrestrict false
                           // positive).
                           std::ostringstream os;
                           os << "T" << std::get<0>(info.param) << "_D" << std::get<1>(info.param)
                              << "_" << mode_name(std::get<2>(info.param));
                           return os.str();
                         });

// Every gate kind and option, in every form, on odd shapes.
struct Variant {
  const char* name;
  Gate gate;
  bool gv, normalize, h0, v_first, causal;
  int64_t Hk, H, K, V;
};

class LinearVariants : public ::testing::TestWithParam<std::tuple<Variant, LinearMode>> {};

TEST_P(LinearVariants, MatchReference) {
  const auto& [v, mode] = GetParam();
  LinearCase c;
  c.B = 2;
  c.T = 75;
  c.gate = v.gate;
  c.gv = v.gv;
  c.normalize = v.normalize;
  c.h0 = v.h0;
  c.v_first = v.v_first;
  c.causal = v.causal;
  c.Hk = v.Hk;
  c.H = v.H;
  c.K = v.K;
  c.V = v.V;
  expect_fast_matches_ref(c, mode);
}

const Variant kVariants[] = {
    {"linear", Gate::kNone, false, false, false, false, true, 2, 2, 32, 48},
    {"linear_normalized", Gate::kNone, false, true, true, false, true, 2, 2, 24, 40},
    {"simple_gla_gqa", Gate::kScalar, false, false, true, false, true, 1, 4, 32, 32},
    {"retnet", Gate::kConstant, false, false, true, false, true, 2, 2, 40, 24},
    {"gla", Gate::kKeyDim, false, false, true, false, true, 2, 2, 36, 20},
    {"gla_gv", Gate::kKeyDim, true, false, true, false, true, 2, 2, 20, 36},
    {"gv_only", Gate::kNone, true, false, false, false, true, 1, 2, 16, 16},
    {"simple_gla_gv_normalized", Gate::kScalar, true, true, true, false, true, 2, 2, 20, 28},
    {"retnet_gv", Gate::kConstant, true, false, true, true, true, 1, 2, 16, 24},
    {"gated_normalized", Gate::kScalar, false, true, true, false, true, 2, 2, 16, 16},
    {"v_first_state", Gate::kScalar, false, false, true, true, true, 2, 2, 16, 24},
    {"non_causal", Gate::kNone, false, false, false, false, false, 2, 2, 32, 32},
    {"non_causal_normalized", Gate::kNone, false, true, false, false, false, 2, 4, 16, 16},
};

INSTANTIATE_TEST_SUITE_P(Options, LinearVariants,
                         ::testing::Combine(::testing::ValuesIn(kVariants),
                                            ::testing::ValuesIn(kModes)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" +
                                  mode_name(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace subq

namespace subq {
namespace {

// Chunk sizes 16, 32, 64 and 128 agree with the recurrence.
TEST(LinearChunk, ChunkSizes) {
  for (int64_t chunk : {16, 32, 64, 128}) {
    LinearCase c;
    c.T = 150;
    c.gate = Gate::kScalar;
    c.h0 = true;
    SCOPED_TRACE(chunk);
    expect_fast_matches_ref(c, LinearMode::kChunk, chunk);
  }
}

// Gates from logsigmoid(N(0, sigma^2)) with sigma in {0.1, 1, 10}, and -inf: finite outputs and
// gradients that match the reference, in every form.
TEST(LinearGates, ExtremeValues) {
  for (Gate gate : {Gate::kScalar, Gate::kKeyDim}) {
    for (double sigma : {0.1, 1.0, 10.0}) {
      for (LinearMode mode : kModes) {
        LinearCase c;
        c.T = 100;
        c.gate = gate;
        c.gate_sigma = sigma;
        c.h0 = true;
        SCOPED_TRACE(::testing::Message() << "gate " << static_cast<int>(gate) << " sigma " << sigma
                                          << " " << mode_name(mode));
        expect_fast_matches_ref(c, mode);
      }
    }
  }
}

TEST(LinearGates, MinusInfinityForgetsEverything) {
  for (LinearMode mode : kModes) {
    LinearCase c;
    c.T = 80;
    c.gate = Gate::kScalar;
    c.h0 = true;
    LinearProblem p(c);
    // g = -inf at t = 50 for every head: outputs from then on ignore everything before.
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.H; ++h) set_element(p.g, {b, 50, h}, -INFINITY);
    LinearAttentionOptions fast = p.opt, ref = p.opt;
    fast.mode = mode;
    ref.impl = Impl::kRef;
    test::LinearResult f = test::run_forward(p, fast), r = test::run_forward(p, ref);
    EXPECT_LE(rel_rms(f.out, r.out), 1e-5) << mode_name(mode);
    for (double x : test::values(f.out)) ASSERT_TRUE(std::isfinite(x));
    test::LinearGradTensors gf = test::run_backward(p, fast), gr = test::run_backward(p, ref);
    for (const Tensor* t : {&gf.dq, &gf.dk, &gf.dv, &gf.dh0})
      for (double x : test::values(*t)) ASSERT_TRUE(std::isfinite(x));
    EXPECT_LE(rel_rms(gf.dq, gr.dq), 1e-5);
    EXPECT_LE(rel_rms(gf.dh0, gr.dh0), 1e-5);
    // The gradient of the -inf gate itself is finite in both.
    for (double x : test::values(gf.dg)) ASSERT_TRUE(std::isfinite(x));
  }
}

// prefill(T1), then continuing from its final state for T2, equals prefill(T1 + T2).
TEST(LinearStates, PrefillThenContinue) {
  for (Gate gate : {Gate::kNone, Gate::kScalar, Gate::kKeyDim}) {
    for (bool normalize : {false, true}) {
      LinearCase c;
      c.T = 130;
      c.gate = gate;
      c.normalize = normalize;
      LinearProblem p(c);
      LinearAttentionOptions opt = p.opt;
      test::LinearResult whole = test::run_forward(p, opt);
      const int64_t T1 = 77, T2 = c.T - T1;
      auto part = [&](int64_t t0, int64_t n, const TensorView& h0, const TensorView& z0,
                      const TensorView& out, const TensorView& ht, const TensorView& zt) {
        LinearAttentionOptions o = opt;
        if (p.g.defined()) o.g = p.g.view().narrow(1, t0, n);
        if (p.gk.defined()) o.gk = p.gk.view().narrow(1, t0, n);
        o.initial_state = h0;
        o.initial_z = z0;
        linear_attention_forward(p.q.view().narrow(1, t0, n), p.k.view().narrow(1, t0, n),
                                 p.v.view().narrow(1, t0, n), out, ht, zt, o);
      };
      Tensor out = Tensor::empty(p.v.sizes(), DType::kF32);
      Tensor h1 = Tensor::empty(p.state_shape(), DType::kF32),
             h2 = Tensor::empty(p.state_shape(), DType::kF32);
      Tensor z1, z2;
      if (normalize) {
        z1 = Tensor::empty({c.B, c.H, c.K}, DType::kF32);
        z2 = Tensor::empty({c.B, c.H, c.K}, DType::kF32);
      }
      part(0, T1, {}, {}, out.view().narrow(1, 0, T1), h1, z1);
      part(T1, T2, h1, z1, out.view().narrow(1, T1, T2), h2, z2);
      SCOPED_TRACE(::testing::Message()
                   << "gate " << static_cast<int>(gate) << " normalize " << normalize);
      EXPECT_LE(rel_rms(out, whole.out), 1e-5);
      EXPECT_LE(rel_rms(h2, whole.ht), 1e-5);
      if (normalize) {
        EXPECT_LE(rel_rms(z2, whole.zt), 1e-5);
      }
    }
  }
}

// One-token steps from a prefilled state equal the rows of one forward.
TEST(LinearStates, DecodeStepsMatchForward) {
  for (Gate gate : {Gate::kNone, Gate::kScalar, Gate::kConstant, Gate::kKeyDim}) {
    LinearCase c;
    c.T = 40;
    c.gate = gate;
    c.gv = gate == Gate::kKeyDim;
    c.normalize = gate == Gate::kNone;
    LinearProblem p(c);
    test::LinearResult whole = test::run_forward(p, p.opt);
    const int64_t T1 = 30;
    Tensor state = Tensor::empty(p.state_shape(), DType::kF32);
    Tensor z = c.normalize ? Tensor::empty({c.B, c.H, c.K}, DType::kF32) : Tensor();
    LinearAttentionOptions o = p.opt;
    auto gates_at = [&](LinearAttentionOptions& oo, int64_t t0, int64_t n) {
      if (p.g.defined()) oo.g = p.g.view().narrow(1, t0, n);
      if (p.gk.defined()) oo.gk = p.gk.view().narrow(1, t0, n);
      if (p.gv.defined()) oo.gv = p.gv.view().narrow(1, t0, n);
    };
    gates_at(o, 0, T1);
    Tensor out0 = Tensor::empty({c.B, T1, c.H, c.V}, DType::kF32);
    linear_attention_forward(p.q.view().narrow(1, 0, T1), p.k.view().narrow(1, 0, T1),
                             p.v.view().narrow(1, 0, T1), out0, state, z, o);
    for (int64_t t = T1; t < c.T; ++t) {
      LinearAttentionOptions so = p.opt;
      gates_at(so, t, 1);
      Tensor out = Tensor::empty({c.B, 1, c.H, c.V}, DType::kF32);
      linear_attention_step(p.q.view().narrow(1, t, 1), p.k.view().narrow(1, t, 1),
                            p.v.view().narrow(1, t, 1), state, z, out, so);
      EXPECT_LE(rel_rms(out, whole.out.view().narrow(1, t, 1)), 1e-5) << "t " << t;
    }
    EXPECT_LE(rel_rms(state, whole.ht), 1e-5);
  }
}

// Varlen equals a loop over the sequences, forward and backward, for the chunked form.
TEST(LinearVarlen, MatchesLoopOverSequences) {
  const std::vector<int64_t> lens = {70, 0, 5, 130, 1};
  int64_t total = 0;
  for (int64_t n : lens) total += n;
  LinearCase c;
  c.B = 1;
  c.T = total + 3;  // 3 rows no sequence covers
  c.gate = Gate::kScalar;
  c.h0 = true;
  LinearProblem p(c, static_cast<int64_t>(lens.size()));
  Tensor cu = Tensor::empty({static_cast<int64_t>(lens.size()) + 1}, DType::kI64);
  int64_t off = 0;
  for (size_t n = 0; n <= lens.size(); ++n) {
    set_element(cu, {static_cast<int64_t>(n)}, static_cast<double>(off));
    if (n < lens.size()) off += lens[n];
  }
  LinearAttentionOptions opt = p.opt;
  opt.cu_seqlens = cu;
  test::LinearResult packed = test::run_forward(p, opt);
  test::LinearGradTensors gp = test::run_backward(p, opt);
  off = 0;
  for (size_t n = 0; n < lens.size(); ++n) {
    const int64_t T = lens[n];
    if (T == 0) continue;
    LinearAttentionOptions o;
    o.g = p.g.view().narrow(1, off, T);
    Tensor h0 = Tensor::copy_of(p.h0.view().narrow(0, n, 1));
    o.initial_state = h0;
    TensorView q = p.q.view().narrow(1, off, T), k = p.k.view().narrow(1, off, T),
               v = p.v.view().narrow(1, off, T);
    Tensor out = Tensor::empty({1, T, c.H, c.V}, DType::kF32);
    Tensor ht = Tensor::empty({1, c.H, c.K, c.V}, DType::kF32);
    linear_attention_forward(q, k, v, out, ht, {}, o);
    EXPECT_LE(rel_rms(packed.out.view().narrow(1, off, T), out), 1e-6) << n;
    EXPECT_LE(rel_rms(packed.ht.view().narrow(0, n, 1), ht), 1e-6) << n;
    Tensor dq = Tensor::empty(q.sizes(), DType::kF32), dk = Tensor::empty(k.sizes(), DType::kF32);
    Tensor dv = Tensor::empty(v.sizes(), DType::kF32), dg = Tensor::empty({1, T, c.H}, DType::kF32);
    Tensor dh0 = Tensor::empty({1, c.H, c.K, c.V}, DType::kF32);
    LinearAttentionGrads g;
    g.dq = dq;
    g.dk = dk;
    g.dv = dv;
    g.dg = dg;
    g.dh0 = dh0;
    Tensor dht = Tensor::copy_of(p.dht.view().narrow(0, n, 1));
    linear_attention_backward(q, k, v, p.dout.view().narrow(1, off, T), dht, {}, g, o);
    EXPECT_LE(rel_rms(gp.dq.view().narrow(1, off, T), dq), 1e-6) << n;
    EXPECT_LE(rel_rms(gp.dv.view().narrow(1, off, T), dv), 1e-6) << n;
    EXPECT_LE(rel_rms(gp.dg.view().narrow(1, off, T), dg), 1e-6) << n;
    EXPECT_LE(rel_rms(gp.dh0.view().narrow(0, n, 1), dh0), 1e-6) << n;
    off += T;
  }
  for (double x : test::values(gp.dq.view().narrow(1, total, 3))) EXPECT_EQ(x, 0.0);
}

TEST(LinearThreads, OneAgainstTwo) {
  LinearCase c;
  c.B = 2;
  c.T = 300;
  c.H = c.Hk = 3;
  c.gate = Gate::kScalar;
  LinearProblem p(c);
  const int saved = num_threads();
  set_num_threads(1);
  test::LinearResult f1 = test::run_forward(p, p.opt);
  test::LinearGradTensors g1 = test::run_backward(p, p.opt);
  set_num_threads(2);
  test::LinearResult f2 = test::run_forward(p, p.opt);
  test::LinearGradTensors g2 = test::run_backward(p, p.opt);
  set_num_threads(saved);
  // One (sequence, head) per work item, in a fixed order: bitwise identical.
  EXPECT_EQ(test::max_abs_diff(test::values(f1.out), test::values(f2.out)), 0.0);
  EXPECT_EQ(test::max_abs_diff(test::values(g1.dq), test::values(g2.dq)), 0.0);
  EXPECT_EQ(test::max_abs_diff(test::values(g1.dg), test::values(g2.dg)), 0.0);
}

TEST(LinearLowPrecision, Bf16Inputs) {
  for (LinearMode mode : kModes) {
    LinearCase c;
    c.T = 100;
    c.gate = Gate::kScalar;
    c.dt = DType::kBF16;
    c.h0 = true;
    // Fast path in bf16 against the float64 reference on the same (rounded) inputs.
    LinearProblem p(c);
    LinearAttentionOptions fast = p.opt;
    fast.mode = mode;
    test::LinearResult f = test::run_forward(p, fast);
    LinearAttentionOptions ref = p.opt;
    ref.impl = Impl::kRef;
    Tensor out = Tensor::empty(p.v.sizes(), DType::kF32);
    linear_attention_forward(p.q, p.k, p.v, out, {}, {}, ref);
    EXPECT_LE(rel_rms(f.out, out), 5e-3) << mode_name(mode);
  }
}

}  // namespace
}  // namespace subq
