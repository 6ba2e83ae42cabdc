// Bad input to linear attention raises subq::Error naming the argument, what was expected and
// what was given.
#include <gtest/gtest.h>

#include <string>

#include "subq/error.h"
#include "subq/linear.h"
#include "tests/linear_util.h"

namespace subq {
namespace {

using test::randn;

template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<const char*> parts) {
  try {
    fn();
    ADD_FAILURE() << "no subq::Error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg;
  }
}

struct Problem {
  Tensor q = randn({2, 10, 2, 8}, DType::kF32, 1), k = randn({2, 10, 2, 8}, DType::kF32, 2);
  Tensor v = randn({2, 10, 4, 6}, DType::kF32, 3), out = Tensor::empty({2, 10, 4, 6}, DType::kF32);
  void run(const LinearAttentionOptions& o, const TensorView& ht = {}) {
    linear_attention_forward(q, k, v, out, ht, {}, o);
  }
};

TEST(LinearErrors, GateOfTheWrongShape) {
  Problem s;
  LinearAttentionOptions o;
  Tensor g = test::log_gates({2, 10, 2}, 1.0, 1);  // H is 4 (value heads), not 2
  o.g = g;
  expect_error([&] { s.run(o); }, {"g", "shape [2, 10, 4]", "[2, 10, 2]"});
  Tensor gk = test::log_gates({2, 10, 4, 6}, 1.0, 1);  // K is 8
  o = {};
  o.gk = gk;
  expect_error([&] { s.run(o); }, {"gk", "shape [2, 10, 4, 8]"});
  Tensor gamma = test::log_gates({3}, 1.0, 1);
  o = {};
  o.g_gamma = gamma;
  expect_error([&] { s.run(o); }, {"g_gamma", "shape [4]"});
}

TEST(LinearErrors, PositiveLogGateIsRejectedNotClamped) {
  Problem s;
  LinearAttentionOptions o;
  Tensor g = test::log_gates({2, 10, 4}, 1.0, 1);
  set_element(g, {1, 7, 3}, 0.25);
  o.g = g;
  expect_error([&] { s.run(o); }, {"g", "log decays <= 0", "0.25 at [1, 7, 3]"});
  set_element(g, {1, 7, 3}, NAN);
  expect_error([&] { s.run(o); }, {"g", "nan at [1, 7, 3]"});
  // 0 and -inf are valid decays.
  set_element(g, {1, 7, 3}, 0.0);
  set_element(g, {0, 2, 1}, -INFINITY);
  EXPECT_NO_THROW(s.run(o));
}

TEST(LinearErrors, MismatchedStateShape) {
  Problem s;
  LinearAttentionOptions o;
  Tensor h0 = Tensor::zeros({2, 4, 6, 8}, DType::kF32);  // V-first layout without the flag
  o.initial_state = h0;
  expect_error([&] { s.run(o); }, {"initial_state", "shape [2, 4, 8, 6]", "[2, 4, 6, 8]"});
  o.state_v_first = true;
  EXPECT_NO_THROW(s.run(o));
  Tensor h0b = Tensor::zeros({2, 4, 8, 6}, DType::kBF16);
  o = {};
  o.initial_state = h0b;
  expect_error([&] { s.run(o); }, {"initial_state", "dtype f32", "bf16"});
  Tensor ht = Tensor::empty({1, 4, 8, 6}, DType::kF32);
  expect_error([&] { s.run({}, ht); }, {"final_state", "shape [2, 4, 8, 6]"});
}

TEST(LinearErrors, ChunkSizeMustBeAPowerOfTwo) {
  Problem s;
  for (int64_t chunk : {48, 0, 8, 512, -64}) {
    LinearAttentionOptions o;
    o.chunk_size = chunk;
    expect_error([&] { s.run(o); }, {"chunk_size", "power of two from 16 to 256"});
  }
}

TEST(LinearErrors, HeadsAndShapes) {
  Problem s;
  Tensor v = randn({2, 10, 3, 6}, DType::kF32, 3), out = Tensor::empty({2, 10, 3, 6}, DType::kF32);
  expect_error([&] { linear_attention_forward(s.q, s.k, v, out, {}, {}, {}); },
               {"v", "multiple of the 2 key heads", "3"});
  Tensor k = randn({2, 10, 2, 9}, DType::kF32, 2);
  expect_error([&] { linear_attention_forward(s.q, k, s.v, s.out, {}, {}, {}); },
               {"k", "[2, 10, 2, 8]"});
  Tensor kb = randn({2, 10, 2, 8}, DType::kBF16, 2);
  expect_error([&] { linear_attention_forward(s.q, kb, s.v, s.out, {}, {}, {}); },
               {"k", "dtype f32 (same as q)", "bf16"});
  Tensor empty = Tensor::empty({2, 0, 2, 8}, DType::kF32);
  expect_error([&] { linear_attention_forward(empty, s.k, s.v, s.out, {}, {}, {}); },
               {"q", "non-empty"});
}

TEST(LinearErrors, OptionCombinations) {
  Problem s;
  LinearAttentionOptions o;
  Tensor g = test::log_gates({2, 10, 4}, 1.0, 1), gk = test::log_gates({2, 10, 4, 8}, 1.0, 1);
  o.g = g;
  o.gk = gk;
  expect_error([&] { s.run(o); }, {"gates", "at most one of g, g_gamma, gk"});
  o = {};
  o.causal = false;
  o.g = g;
  expect_error([&] { s.run(o); }, {"gates", "causal = false"});
  o = {};
  Tensor z0 = Tensor::zeros({2, 4, 8}, DType::kF32);
  o.initial_z = z0;
  expect_error([&] { s.run(o); }, {"initial_z", "unless normalize"});
  o = {};
  o.eps = 0;
  o.normalize = true;
  expect_error([&] { s.run(o); }, {"eps", "> 0"});
  o = {};
  o.scale = INFINITY;
  expect_error([&] { s.run(o); }, {"scale", "finite"});
  Tensor cu = Tensor::empty({3}, DType::kI32);
  set_element(cu, {0}, 0);
  set_element(cu, {1}, 4);
  set_element(cu, {2}, 11);
  o = {};
  o.cu_seqlens = cu;
  Tensor q1 = randn({1, 10, 2, 8}, DType::kF32, 1), v1 = randn({1, 10, 4, 6}, DType::kF32, 3);
  Tensor o1 = Tensor::empty({1, 10, 4, 6}, DType::kF32);
  expect_error([&] { linear_attention_forward(q1, q1, v1, o1, {}, {}, o); },
               {"cu_seqlens", "within the 10 packed rows", "11"});
}

TEST(LinearErrors, BackwardGradientsNeedTheirInputs) {
  Problem s;
  Tensor dq = Tensor::empty(s.q.sizes(), DType::kF32), dk = Tensor::empty(s.k.sizes(), DType::kF32);
  Tensor dv = Tensor::empty(s.v.sizes(), DType::kF32), dg = Tensor::empty({2, 10, 4}, DType::kF32);
  LinearAttentionGrads g;
  g.dq = dq;
  g.dk = dk;
  g.dv = dv;
  g.dg = dg;
  expect_error([&] { linear_attention_backward(s.q, s.k, s.v, s.out, {}, {}, g, {}); },
               {"dg", "none without g"});
  g.dg = TensorView();
  g.dv = TensorView();
  expect_error([&] { linear_attention_backward(s.q, s.k, s.v, s.out, {}, {}, g, {}); },
               {"dv", "got none"});
}

TEST(LinearErrors, StepNeedsOneTokenAndAState) {
  Problem s;
  Tensor state = Tensor::zeros({2, 4, 8, 6}, DType::kF32);
  expect_error([&] { linear_attention_step(s.q, s.k, s.v, state, {}, s.out, {}); },
               {"q", "one token per sequence"});
  TensorView q1 = s.q.view().narrow(1, 0, 1), k1 = s.k.view().narrow(1, 0, 1),
             v1 = s.v.view().narrow(1, 0, 1);
  Tensor out1 = Tensor::empty({2, 1, 4, 6}, DType::kF32);
  expect_error([&] { linear_attention_step(q1, k1, v1, {}, {}, out1, {}); }, {"state"});
  LinearAttentionOptions o;
  o.normalize = true;
  expect_error([&] { linear_attention_step(q1, k1, v1, state, {}, out1, o); }, {"z"});
}

}  // namespace
}  // namespace subq
