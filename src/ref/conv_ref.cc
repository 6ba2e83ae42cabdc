#include "src/ref/conv_ref.h"

#include <cmath>
#include <vector>

namespace subq::ref {

namespace {

using detail::ConvArgs;
using detail::ConvSeq;

double at(const TensorView& t, int64_t b, int64_t r, int64_t d) {
  return load_at(t, b * t.stride(0) + r * t.stride(1) + d * t.stride(2));
}
void put(const TensorView& t, int64_t b, int64_t r, int64_t d, double v) {
  store_at(t, b * t.stride(0) + r * t.stride(1) + d * t.stride(2), v);
}
void add(const TensorView& t, int64_t b, int64_t r, int64_t d, double v) {
  put(t, b, r, d, at(t, b, r, d) + v);
}

double sigmoid(double u) {
  return 1.0 / (1.0 + std::exp(-u));
}

// Input at position p of sequence n (p < 0 reads the initial state: p = -1 is its last row).
double input(const ConvArgs& a, size_t n, int64_t p, int64_t d) {
  const ConvSeq& s = a.seqs[n];
  if (p >= 0) return at(a.x, s.batch, s.start + p, d);
  if (!a.h0.defined()) return 0.0;
  return at(a.h0, static_cast<int64_t>(n), a.W - 1 + p, d);
}

double weight(const ConvArgs& a, int64_t d, int64_t j) {
  return load_at(a.weight, d * a.weight.stride(0) + j * a.weight.stride(1));
}

double preact(const ConvArgs& a, size_t n, int64_t t, int64_t d) {
  double u = a.bias.defined() ? load_at(a.bias, d * a.bias.stride(0)) : 0.0;
  for (int64_t j = 0; j < a.W; ++j) u += weight(a, d, j) * input(a, n, t - a.W + 1 + j, d);
  return u;
}

}  // namespace

void short_conv_forward(const ConvArgs& a) {
  for (size_t n = 0; n < a.seqs.size(); ++n) {
    const ConvSeq& s = a.seqs[n];
    for (int64_t t = 0; t < s.T; ++t)
      for (int64_t d = 0; d < a.D; ++d) {
        const double u = preact(a, n, t, d);
        put(a.out, s.batch, s.start + t, d, a.silu ? u * sigmoid(u) : u);
      }
    if (a.ht.defined())
      for (int64_t i = 0; i < a.W - 1; ++i)
        for (int64_t d = 0; d < a.D; ++d)
          put(a.ht, static_cast<int64_t>(n), i, d, input(a, n, s.T - (a.W - 1) + i, d));
  }
}

void short_conv_backward(const ConvArgs& a) {
  const auto& g = a.grads;
  for (const TensorView* t : {&g.dx, &g.dweight, &g.dbias, &g.dh0})
    if (t->defined()) fill(*t, 0.0);
  for (size_t n = 0; n < a.seqs.size(); ++n) {
    const ConvSeq& s = a.seqs[n];
    const auto nn = static_cast<int64_t>(n);
    // Gradient with respect to the input at position p (p < 0: the initial state).
    auto dinput = [&](int64_t p, int64_t d, double v) {
      if (p >= 0) {
        add(g.dx, s.batch, s.start + p, d, v);
      } else if (g.dh0.defined()) {
        add(g.dh0, nn, a.W - 1 + p, d, v);
      }
    };
    for (int64_t t = 0; t < s.T; ++t)
      for (int64_t d = 0; d < a.D; ++d) {
        const double u = preact(a, n, t, d);
        double du = at(a.dout, s.batch, s.start + t, d);
        if (a.silu) {
          const double sg = sigmoid(u);
          du *= sg * (1 + u * (1 - sg));
        }
        if (g.dbias.defined())
          store_at(g.dbias, d * g.dbias.stride(0), load_at(g.dbias, d * g.dbias.stride(0)) + du);
        for (int64_t j = 0; j < a.W; ++j) {
          const int64_t p = t - a.W + 1 + j;
          dinput(p, d, weight(a, d, j) * du);
          if (g.dweight.defined()) {
            const int64_t off = d * g.dweight.stride(0) + j * g.dweight.stride(1);
            store_at(g.dweight, off, load_at(g.dweight, off) + input(a, n, p, d) * du);
          }
        }
      }
    if (a.dht.defined())  // the final state is the last W - 1 inputs
      for (int64_t i = 0; i < a.W - 1; ++i)
        for (int64_t d = 0; d < a.D; ++d) dinput(s.T - (a.W - 1) + i, d, at(a.dht, nn, i, d));
  }
}

}  // namespace subq::ref
