#include "src/ref/flash_ref.h"

#include <cmath>
#include <limits>
#include <vector>

namespace subq::ref {

namespace {

using detail::flash_visible;
using detail::FlashArgs;
using detail::FlashDecodeArgs;
using detail::FlashSeq;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// rows [row0, row0 + n) of head h of a [B, T, heads, dim] view, as an n x dim f64 matrix.
std::vector<double> load_rows(const TensorView& t, int64_t b, int64_t row0, int64_t n, int64_t h) {
  const int64_t dim = t.size(3);
  std::vector<double> m(static_cast<size_t>(n * dim));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t d = 0; d < dim; ++d)
      m[r * dim + d] = load_at(
          t, b * t.stride(0) + (row0 + r) * t.stride(1) + h * t.stride(2) + d * t.stride(3));
  return m;
}

void store_row(const TensorView& t, int64_t b, int64_t row, int64_t h, const double* x) {
  for (int64_t d = 0; d < t.size(3); ++d)
    store_at(t, b * t.stride(0) + row * t.stride(1) + h * t.stride(2) + d * t.stride(3), x[d]);
}

void add_row(const TensorView& t, int64_t b, int64_t row, int64_t h, const double* x) {
  for (int64_t d = 0; d < t.size(3); ++d) {
    const int64_t off = b * t.stride(0) + row * t.stride(1) + h * t.stride(2) + d * t.stride(3);
    store_at(t, off, load_at(t, off) + x[d]);
  }
}

double round_as(DType dt, double x) {
  return dt == DType::kF64 ? x : static_cast<double>(round_to(dt, static_cast<float>(x)));
}

// The scores of one (sequence, head) before softmax: scale, softcap, ALiBi, mask. raw[i*Tk+j]
// keeps the scaled pre-softcap value (the backward needs it for the softcap derivative).
struct Scores {
  std::vector<double> s, raw;
};

Scores scores(const FlashArgs& a, const FlashSeq& sq, size_t n, int64_t h,
              const std::vector<double>& q, const std::vector<double>& k, DType emulate) {
  const int64_t Tq = sq.Tq, Tk = sq.Tk, D = a.D;
  Scores r;
  r.s.assign(Tq * Tk, kNegInf);
  r.raw.assign(Tq * Tk, 0.0);
  for (int64_t i = 0; i < Tq; ++i) {
    for (int64_t j = 0; j < Tk; ++j) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += q[i * D + d] * k[j * D + d];
      double s = dot * a.scale;
      r.raw[i * Tk + j] = s;
      if (a.softcap > 0) s = a.softcap * std::tanh(s / a.softcap);
      s -= a.slope(n, h) * std::abs(static_cast<double>(i + Tk - Tq - j));
      if (flash_visible(i, j, Tq, Tk, a.left, a.right)) r.s[i * Tk + j] = round_as(emulate, s);
    }
  }
  return r;
}

// Row-wise softmax in place; returns the lse per row (-inf for a row that sees nothing).
std::vector<double> softmax_rows(std::vector<double>& s, int64_t Tq, int64_t Tk) {
  std::vector<double> lse(Tq);
  for (int64_t i = 0; i < Tq; ++i) {
    double* row = &s[i * Tk];
    double m = kNegInf;
    for (int64_t j = 0; j < Tk; ++j) m = std::max(m, row[j]);
    if (m == kNegInf) {
      for (int64_t j = 0; j < Tk; ++j) row[j] = 0;
      lse[i] = kNegInf;
      continue;
    }
    double sum = 0;
    for (int64_t j = 0; j < Tk; ++j) sum += std::exp(row[j] - m);
    for (int64_t j = 0; j < Tk; ++j) row[j] = std::exp(row[j] - m) / sum;
    lse[i] = m + std::log(sum);
  }
  return lse;
}

}  // namespace

void flash_forward(const FlashArgs& a, DType emulate) {
  for (size_t n = 0; n < a.seqs.size(); ++n) {
    const FlashSeq& sq = a.seqs[n];
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t kvh = h / a.group();
      const auto q = load_rows(a.q, sq.batch, sq.q_start, sq.Tq, h);
      const auto k = load_rows(a.k, sq.batch, sq.k_start, sq.Tk, kvh);
      const auto v = load_rows(a.v, sq.batch, sq.k_start, sq.Tk, kvh);
      Scores sc = scores(a, sq, n, h, q, k, emulate);
      const auto lse = softmax_rows(sc.s, sq.Tq, sq.Tk);
      std::vector<double> o(a.Dv);
      for (int64_t i = 0; i < sq.Tq; ++i) {
        std::fill(o.begin(), o.end(), 0.0);
        for (int64_t j = 0; j < sq.Tk; ++j) {
          const double p = round_as(emulate, sc.s[i * sq.Tk + j]);
          for (int64_t d = 0; d < a.Dv; ++d) o[d] += p * v[j * a.Dv + d];
        }
        for (double& x : o) x = round_as(emulate, x);
        store_row(a.out, sq.batch, sq.q_start + i, h, o.data());
        store_at(
            a.lse,
            sq.batch * a.lse.stride(0) + h * a.lse.stride(1) + (sq.q_start + i) * a.lse.stride(2),
            lse[i]);
      }
    }
  }
}

void flash_backward(const FlashArgs& a) {
  fill(a.dq, 0.0);
  fill(a.dk, 0.0);
  fill(a.dv, 0.0);
  for (size_t n = 0; n < a.seqs.size(); ++n) {
    const FlashSeq& sq = a.seqs[n];
    const int64_t Tq = sq.Tq, Tk = sq.Tk, D = a.D, Dv = a.Dv;
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t kvh = h / a.group();
      const auto q = load_rows(a.q, sq.batch, sq.q_start, Tq, h);
      const auto k = load_rows(a.k, sq.batch, sq.k_start, Tk, kvh);
      const auto v = load_rows(a.v, sq.batch, sq.k_start, Tk, kvh);
      const auto dout = load_rows(a.dout, sq.batch, sq.q_start, Tq, h);
      Scores sc = scores(a, sq, n, h, q, k, DType::kF64);
      softmax_rows(sc.s, Tq, Tk);
      const std::vector<double>& P = sc.s;
      std::vector<double> dq(Tq * D, 0.0), dk(Tk * D, 0.0), dv(Tk * Dv, 0.0);
      for (int64_t i = 0; i < Tq; ++i) {
        // dP_ij = dO_i . V_j; delta_i = sum_j P_ij dP_ij (= dO_i . O_i).
        std::vector<double> dP(Tk, 0.0);
        double delta = 0;
        for (int64_t j = 0; j < Tk; ++j) {
          for (int64_t d = 0; d < Dv; ++d) dP[j] += dout[i * Dv + d] * v[j * Dv + d];
          delta += P[i * Tk + j] * dP[j];
        }
        for (int64_t j = 0; j < Tk; ++j) {
          const double p = P[i * Tk + j];
          if (p == 0) continue;  // masked (or underflowed): no gradient
          for (int64_t d = 0; d < Dv; ++d) dv[j * Dv + d] += p * dout[i * Dv + d];
          double ds = p * (dP[j] - delta);
          if (a.softcap > 0) {
            const double t = std::tanh(sc.raw[i * Tk + j] / a.softcap);
            ds *= 1 - t * t;
          }
          for (int64_t d = 0; d < D; ++d) {
            dq[i * D + d] += a.scale * ds * k[j * D + d];
            dk[j * D + d] += a.scale * ds * q[i * D + d];
          }
        }
      }
      for (int64_t i = 0; i < Tq; ++i) store_row(a.dq, sq.batch, sq.q_start + i, h, &dq[i * D]);
      for (int64_t j = 0; j < Tk; ++j) {
        add_row(a.dk, sq.batch, sq.k_start + j, kvh, &dk[j * D]);
        add_row(a.dv, sq.batch, sq.k_start + j, kvh, &dv[j * Dv]);
      }
    }
  }
}

void flash_decode(const FlashDecodeArgs& a) {
  for (int64_t b = 0; b < a.B; ++b) {
    const int64_t total = a.total[b], first = a.first_stored(b);
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t kvh = h / a.group();
      const auto q = load_rows(a.q, b, 0, a.Tn, h);
      for (int64_t i = 0; i < a.Tn; ++i) {
        std::vector<double> s;
        std::vector<int64_t> slots;
        for (int64_t p = first; p < total; ++p) {
          if (!flash_visible(i, p, a.Tn, total, a.left, a.right)) continue;
          const auto k = load_rows(a.k_cache, b, a.slot(p), 1, kvh);
          double dot = 0;
          for (int64_t d = 0; d < a.D; ++d) dot += q[i * a.D + d] * k[d];
          double x = dot * a.scale;
          if (a.softcap > 0) x = a.softcap * std::tanh(x / a.softcap);
          x -= a.slope(b, h) * std::abs(static_cast<double>(i + total - a.Tn - p));
          s.push_back(x);
          slots.push_back(a.slot(p));
        }
        std::vector<double> o(a.Dv, 0.0);
        double lse = kNegInf;
        if (!s.empty()) {
          double m = kNegInf, sum = 0;
          for (double x : s) m = std::max(m, x);
          for (double x : s) sum += std::exp(x - m);
          for (size_t t = 0; t < s.size(); ++t) {
            const auto v = load_rows(a.v_cache, b, slots[t], 1, kvh);
            const double p = std::exp(s[t] - m) / sum;
            for (int64_t d = 0; d < a.Dv; ++d) o[d] += p * v[d];
          }
          lse = m + std::log(sum);
        }
        store_row(a.out, b, i, h, o.data());
        store_at(a.lse, b * a.lse.stride(0) + h * a.lse.stride(1) + i * a.lse.stride(2), lse);
      }
    }
  }
}

}  // namespace subq::ref
