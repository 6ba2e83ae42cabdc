// Glue between the public linear-attention problem and the SIMD kernels (see linear_cpu.h):
// normalize as a ones column, states to and from f32 scratch, the mode choice, and gate
// gradients from the kernels' per-head dq and dk.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "src/cpu/linear_cpu.h"
#include "subq/error.h"
#include "subq/threads.h"

namespace subq::cpu {

namespace {

using detail::GateKind;
using detail::LinearArgs;
using detail::LinearSeq;

// Element (b, r, h, j) of a contiguous f32 [B, T, H, width] buffer.
float* at(const Tensor& t, const LinearArgs& a, int64_t b, int64_t r, int64_t h, int64_t width) {
  return t.data_as<float>() + core_row(a, b, r, h) * width;
}

// The first n entries of row (b, r, h) of a [B, T, heads, *] view, as f32 (any dtype, strides).
void read_row(const TensorView& t, int64_t b, int64_t r, int64_t h, float* dst, int64_t n) {
  const char* base = detail::row_ptr(t, b, r, h);
  const int64_t st = t.stride(3);
  if (t.dtype() == DType::kF32 && st == 1) {
    std::memcpy(dst, base, n * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    dst[i] = static_cast<float>(load_element(base, t.dtype(), i * st));
}

void write_row(const TensorView& t, int64_t b, int64_t r, int64_t h, const float* src, int64_t n) {
  char* base = detail::row_ptr(t, b, r, h);
  const int64_t st = t.stride(3);
  if (t.dtype() == DType::kF32 && st == 1) {
    std::memcpy(base, src, n * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < n; ++i) store_element(base, t.dtype(), i * st, src[i]);
}

// Owns everything the core problem points to.
struct Core {
  LinearCore c;
  Tensor v_aug, gv_aug, h0, ht, out, dout, dht, dh0, dq, dk, dv;
};

int64_t num_seqs(const LinearArgs& a) {
  return static_cast<int64_t>(a.seqs.size());
}

// The kernels' state layout is f32 [N, H, K, Vc] contiguous. A public state that already is
// exactly that (f32, K x V, contiguous, and no z column) is used in place, with no copy: decode
// steps update their state this way. Returns null otherwise.
float* direct_state(const LinearArgs& a, const TensorView& s) {
  if (!s.defined() || a.normalize || a.v_first || s.dtype() != DType::kF32 || !s.is_contiguous())
    return nullptr;
  return s.data_as<float>();
}

// f32 [N, H, K, Vc] from a public state (K x V or V-first) and, for normalize, z as column V.
Tensor gather_state(const LinearArgs& a, int64_t Vc, const TensorView& s, const TensorView& z) {
  Tensor t = Tensor::zeros({num_seqs(a), a.H, a.K, Vc}, DType::kF32);
  float* p = t.data_as<float>();
  for (int64_t n = 0; n < num_seqs(a); ++n)
    for (int64_t h = 0; h < a.H; ++h)
      for (int64_t i = 0; i < a.K; ++i) {
        float* row = p + ((n * a.H + h) * a.K + i) * Vc;
        if (s.defined())
          for (int64_t j = 0; j < a.V; ++j)
            row[j] = static_cast<float>(load_at(s, a.state_offset(s, n, h, i, j)));
        if (z.defined())
          row[a.V] =
              static_cast<float>(load_at(z, n * z.stride(0) + h * z.stride(1) + i * z.stride(2)));
      }
  return t;
}

// The reverse of gather_state.
void scatter_state(const LinearArgs& a, int64_t Vc, const Tensor& t, const TensorView& s,
                   const TensorView& z) {
  const float* p = t.data_as<float>();
  for (int64_t n = 0; n < num_seqs(a); ++n)
    for (int64_t h = 0; h < a.H; ++h)
      for (int64_t i = 0; i < a.K; ++i) {
        const float* row = p + ((n * a.H + h) * a.K + i) * Vc;
        if (s.defined())
          for (int64_t j = 0; j < a.V; ++j) store_at(s, a.state_offset(s, n, h, i, j), row[j]);
        if (z.defined()) store_at(z, n * z.stride(0) + h * z.stride(1) + i * z.stride(2), row[a.V]);
      }
}

// Calls fn(b, r, h) for every covered row of every value head.
template <class Fn>
void for_rows(const LinearArgs& a, Fn&& fn) {
  for (const LinearSeq& s : a.seqs)
    for (int64_t t = 0; t < s.T; ++t)
      for (int64_t h = 0; h < a.H; ++h) fn(s.batch, s.start + t, h);
}

void prepare(const LinearArgs& a, Core& k) {
  LinearCore& c = k.c;
  c.a = &a;
  c.Vc = a.V + (a.normalize ? 1 : 0);
  if (a.normalize) {
    // v_aug = [v, 1]: the extra column of the state is z, and its output is q^T z.
    const int64_t B = a.v.size(0), T = a.v.size(1);
    k.v_aug = Tensor::empty({B, T, a.H, c.Vc}, DType::kF32);
    copy_into(a.v, k.v_aug.view().narrow(3, 0, a.V));
    fill(k.v_aug.view().narrow(3, a.V, 1), 1.0);
    c.v = k.v_aug;
    if (a.has_gv) {  // z has no column gate
      k.gv_aug = Tensor::empty({B, T, a.H, c.Vc}, DType::kF32);
      copy_into(a.gv, k.gv_aug.view().narrow(3, 0, a.V));
      fill(k.gv_aug.view().narrow(3, a.V, 1), 0.0);
      c.gv = k.gv_aug;
    }
    c.scale = 1.f;  // scale cancels in the normalized output
  } else {
    c.v = a.v;
    if (a.has_gv) c.gv = a.gv;
    c.scale = a.scale;
  }
  if (float* p = direct_state(a, a.h0)) {
    c.h0 = p;
  } else if (a.h0.defined() || a.z0.defined()) {
    k.h0 = gather_state(a, c.Vc, a.h0, a.z0);
    c.h0 = k.h0.data_as<float>();
  }
}

// The chunk size the chunked kernels run with: the option in chunk mode; in parallel mode one
// chunk spanning the longest sequence (the quadratic form), rounded up to 16.
int64_t chunk_for(const LinearArgs& a) {
  if (a.mode == LinearMode::kChunk) return a.chunk;
  int64_t T = 1;
  for (const LinearSeq& s : a.seqs) T = std::max(T, s.T);
  return (T + 15) / 16 * 16;
}

// Which kernel runs. Causal chunk and parallel modes use the chunked kernels: the one for
// scalar row gates (none, g, g_gamma), or the per-dim one for gk and for anything with gv. The
// recurrence covers the recurrent mode and non-causal attention.
bool use_chunk(const LinearCore& c) {
  const LinearArgs& a = *c.a;
  return a.causal && a.mode != LinearMode::kRecurrent;
}

bool per_dim(const LinearCore& c) {
  return c.a->gate == GateKind::kKeyDim || c.gv.defined();
}

void run_forward(const LinearCore& c) {
  if (!use_chunk(c)) return linear_recurrent_forward(c);
  if (per_dim(c)) return linear_chunk_gk_forward(c, chunk_for(*c.a));
  linear_chunk_forward(c, chunk_for(*c.a));
}

void run_backward(const LinearCore& c) {
  if (!use_chunk(c)) return linear_recurrent_backward(c);
  if (per_dim(c)) return linear_chunk_gk_backward(c, chunk_for(*c.a));
  linear_chunk_backward(c, chunk_for(*c.a));
}

// Runs the core forward into f32 scratch (out, and the final state when `want_ht`).
void core_forward(const LinearArgs& a, Core& k, bool want_ht) {
  const int64_t B = a.v.size(0), T = a.v.size(1);
  k.out = Tensor::zeros({B, T, a.H, k.c.Vc}, DType::kF32);
  k.c.out = k.out;
  if (want_ht) {
    k.ht = Tensor::zeros({num_seqs(a), a.H, a.K, k.c.Vc}, DType::kF32);
    k.c.ht = k.ht.data_as<float>();
  }
  run_forward(k.c);
}

}  // namespace

void linear_forward(const LinearArgs& a) {
  Core k;
  prepare(a, k);
  const bool want_ht = a.ht.defined() || a.zt.defined();
  if (a.normalize) {
    core_forward(a, k, want_ht);
    // out = num / (den + eps), num = columns [0, V), den = column V.
    std::vector<float> row(a.V);
    for_rows(a, [&](int64_t b, int64_t r, int64_t h) {
      const float* o = at(k.out, a, b, r, h, k.c.Vc);
      const float den = o[a.V] + a.eps;
      for (int64_t j = 0; j < a.V; ++j) row[j] = o[j] / den;
      copy_into(TensorView(row.data(), DType::kF32, {1, 1, 1, a.V}),
                a.out.narrow(0, b, 1).narrow(1, r, 1).narrow(2, h, 1));
    });
  } else {
    k.c.out = a.out;
    if (float* p = direct_state(a, a.ht)) {
      k.c.ht = p;  // written in place (the kernels read h0 into scratch first, so ht may be h0)
    } else if (want_ht) {
      k.ht = Tensor::zeros({num_seqs(a), a.H, a.K, k.c.Vc}, DType::kF32);
      k.c.ht = k.ht.data_as<float>();
    }
    run_forward(k.c);
  }
  if (want_ht && k.ht.defined()) scatter_state(a, k.c.Vc, k.ht, a.ht, a.zt);
}

void linear_backward(const LinearArgs& a) {
  const auto& g = a.grads;
  Core k;
  prepare(a, k);
  LinearCore& c = k.c;
  const int64_t B = a.v.size(0), T = a.v.size(1), Vc = c.Vc;
  const bool has_dht = a.dht.defined() || a.dzt.defined();
  const bool gate_grads =
      (a.gate != GateKind::kNone && (g.dg.defined() || g.dg_gamma.defined() || g.dgk.defined())) ||
      (a.has_gv && g.dgv.defined());
  // The forward is recomputed for normalize (num and den), for gv's gradient (o o do), and for
  // the final-state term of gate gradients (S_T).
  if (a.normalize || (a.has_gv && g.dgv.defined()) || (gate_grads && has_dht))
    core_forward(a, k, gate_grads && has_dht);
  if (a.normalize) {
    // d num = dout / den; d den = -sum_j dout_j num_j / den^2.
    k.dout = Tensor::zeros({B, T, a.H, Vc}, DType::kF32);
    std::vector<float> d(a.V);
    for_rows(a, [&](int64_t b, int64_t r, int64_t h) {
      const float* o = at(k.out, a, b, r, h, Vc);
      float* dst = at(k.dout, a, b, r, h, Vc);
      copy_into(a.dout.narrow(0, b, 1).narrow(1, r, 1).narrow(2, h, 1),
                TensorView(d.data(), DType::kF32, {1, 1, 1, a.V}));
      const double den = static_cast<double>(o[a.V]) + a.eps;
      double dden = 0;
      for (int64_t j = 0; j < a.V; ++j) {
        dst[j] = static_cast<float>(d[j] / den);
        dden -= d[j] * static_cast<double>(o[j]) / (den * den);
      }
      dst[a.V] = static_cast<float>(dden);
    });
    c.dout = k.dout;
  } else {
    c.dout = a.dout;
  }
  if (has_dht) {
    k.dht = gather_state(a, Vc, a.dht, a.dzt);
    c.dht = k.dht.data_as<float>();
  }
  k.dq = Tensor::zeros({B, T, a.H, a.K}, DType::kF32);
  k.dk = Tensor::zeros({B, T, a.H, a.K}, DType::kF32);
  c.dq = k.dq.data_as<float>();
  c.dk = k.dk.data_as<float>();
  if (a.normalize) {
    k.dv = Tensor::zeros({B, T, a.H, Vc}, DType::kF32);
    c.dv = k.dv;
  } else {
    fill(g.dv, 0.0);  // rows no sequence covers stay zero
    c.dv = g.dv;
  }
  if (g.dh0.defined() || g.dz0.defined()) {
    k.dh0 = Tensor::zeros({num_seqs(a), a.H, a.K, Vc}, DType::kF32);
    c.dh0 = k.dh0.data_as<float>();
  }
  run_backward(c);

  // dq, dk: sum the value heads of each key head's group (rows in parallel).
  const int64_t G = a.group();
  parallel_for(B * T, [&](int64_t br, int) {
    const int64_t b = br / T, r = br % T;
    std::vector<float> sum(a.K);
    for (const auto& [src, dst] :
         {std::pair<const Tensor*, const TensorView*>{&k.dq, &g.dq}, {&k.dk, &g.dk}}) {
      for (int64_t hk = 0; hk < a.Hk; ++hk) {
        std::fill(sum.begin(), sum.end(), 0.f);
        for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {
          const float* p = at(*src, a, b, r, h, a.K);
          for (int64_t i = 0; i < a.K; ++i) sum[i] += p[i];
        }
        write_row(*dst, b, r, hk, sum.data(), a.K);
      }
    }
  });
  if (a.normalize) copy_into(k.dv.view().narrow(3, 0, a.V), g.dv);
  if (k.dh0.defined()) scatter_state(a, Vc, k.dh0, g.dh0, g.dz0);

  if (!gate_grads) return;
  // Gate gradients. With b_t the cumulative log gate, q_t enters only as q_t o exp(b_t) and
  // k_s as k_s o exp(-b_s) (v_s as v_s o exp(-bv_s), o_t as exp(bv_t) o ...), so
  //   dL/db_t = q_t o dq_t - k_t o dk_t   (+ the final state's term at t = T)
  // and the gate's gradient is its reverse cumulative sum. One item per (sequence, head).
  for (const TensorView* t : {&g.dg, &g.dg_gamma, &g.dgk, &g.dgv})
    if (t->defined()) fill(*t, 0.0);
  std::vector<double> gamma(a.seqs.size() * a.H, 0.0);
  parallel_for(static_cast<int64_t>(a.seqs.size()) * a.H, [&](int64_t item, int) {
    const auto n = static_cast<size_t>(item / a.H);
    const int64_t h = item % a.H, hk = h / G;
    const LinearSeq& s = a.seqs[n];
    std::vector<float> qrow(a.K), krow(a.K), vrow(a.V), drow(a.V), dvrow(a.V), grow(a.K);
    std::vector<double> acc(std::max(a.K, a.V));
    const float* ST = k.ht.defined() ? k.ht.data_as<float>() + (n * a.H + h) * a.K * Vc : nullptr;
    const float* dST =
        k.dht.defined() ? k.dht.data_as<float>() + (n * a.H + h) * a.K * Vc : nullptr;
    if (a.gate != GateKind::kNone) {
      for (int64_t i = 0; i < a.K; ++i) {
        acc[i] = 0;
        if (ST && dST)
          for (int64_t j = 0; j < Vc; ++j)
            acc[i] += static_cast<double>(dST[i * Vc + j]) * ST[i * Vc + j];
      }
      for (int64_t t = s.T - 1; t >= 0; --t) {
        const int64_t r = s.start + t;
        read_row(a.q, s.batch, r, hk, qrow.data(), a.K);
        read_row(a.k, s.batch, r, hk, krow.data(), a.K);
        const float* dq = at(k.dq, a, s.batch, r, h, a.K);
        const float* dk = at(k.dk, a, s.batch, r, h, a.K);
        double total = 0;
        for (int64_t i = 0; i < a.K; ++i) {
          acc[i] += static_cast<double>(qrow[i]) * dq[i] - static_cast<double>(krow[i]) * dk[i];
          total += acc[i];
        }
        if (a.gate == GateKind::kScalar && g.dg.defined())
          store_at(g.dg, s.batch * g.dg.stride(0) + r * g.dg.stride(1) + h * g.dg.stride(2), total);
        if (a.gate == GateKind::kConstant) gamma[item] += total;
        if (a.gate == GateKind::kKeyDim && g.dgk.defined()) {
          for (int64_t i = 0; i < a.K; ++i) grow[i] = static_cast<float>(acc[i]);
          write_row(g.dgk, s.batch, r, h, grow.data(), a.K);
        }
      }
    }
    if (a.has_gv && g.dgv.defined()) {
      for (int64_t j = 0; j < a.V; ++j) {
        acc[j] = 0;
        if (ST && dST)
          for (int64_t i = 0; i < a.K; ++i)
            acc[j] += static_cast<double>(dST[i * Vc + j]) * ST[i * Vc + j];
      }
      for (int64_t t = s.T - 1; t >= 0; --t) {
        const int64_t r = s.start + t;
        const float* o = at(k.out, a, s.batch, r, h, Vc);
        read_row(a.v, s.batch, r, h, vrow.data(), a.V);
        read_row(c.dout, s.batch, r, h, drow.data(), a.V);  // first V columns when augmented
        read_row(c.dv, s.batch, r, h, dvrow.data(), a.V);
        for (int64_t j = 0; j < a.V; ++j) {
          acc[j] += static_cast<double>(o[j]) * drow[j] - static_cast<double>(vrow[j]) * dvrow[j];
          vrow[j] = static_cast<float>(acc[j]);  // reuse vrow for the output row
        }
        write_row(g.dgv, s.batch, r, h, vrow.data(), a.V);
      }
    }
  });
  if (a.gate == GateKind::kConstant && g.dg_gamma.defined())
    for (int64_t h = 0; h < a.H; ++h) {
      double total = 0;
      for (size_t n = 0; n < a.seqs.size(); ++n) total += gamma[n * a.H + h];
      store_at(g.dg_gamma, h * g.dg_gamma.stride(0), total);
    }
}

}  // namespace subq::cpu
