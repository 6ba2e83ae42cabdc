#include "src/ref/linear_ref.h"

#include <cmath>
#include <vector>

namespace subq::ref {

namespace {

using detail::GateKind;
using detail::LinearArgs;
using detail::LinearSeq;

// Row t of head h of a [B, T, heads, dim] view as doubles.
std::vector<double> row(const TensorView& t, int64_t b, int64_t r, int64_t h) {
  const int64_t dim = t.size(3);
  std::vector<double> x(dim);
  for (int64_t d = 0; d < dim; ++d)
    x[d] = load_at(t, b * t.stride(0) + r * t.stride(1) + h * t.stride(2) + d * t.stride(3));
  return x;
}

void store_row(const TensorView& t, int64_t b, int64_t r, int64_t h, const std::vector<double>& x) {
  for (size_t d = 0; d < x.size(); ++d)
    store_at(t, b * t.stride(0) + r * t.stride(1) + h * t.stride(2) + d * t.stride(3), x[d]);
}

// Log decay of the state rows (K entries) and columns (V entries) at token r of value head h.
void gates(const LinearArgs& a, const LinearSeq& s, int64_t r, int64_t h, std::vector<double>& gk,
           std::vector<double>& gv) {
  gk.assign(a.K, 0.0);
  gv.assign(a.V, 0.0);
  switch (a.gate) {
    case GateKind::kScalar:
      gk.assign(a.K, load_at(a.g, s.batch * a.g.stride(0) + r * a.g.stride(1) + h * a.g.stride(2)));
      break;
    case GateKind::kConstant:
      gk.assign(a.K, load_at(a.g_gamma, h * a.g_gamma.stride(0)));
      break;
    case GateKind::kKeyDim:
      gk = row(a.gk, s.batch, r, h);
      break;
    case GateKind::kNone:
      break;
  }
  if (a.has_gv) gv = row(a.gv, s.batch, r, h);
}

// A K x V state (plus z, K entries) of one (sequence, head), row-major.
struct State {
  std::vector<double> S, z;
  State(int64_t K, int64_t V) : S(K * V, 0.0), z(K, 0.0) {}
};

State load_state(const LinearArgs& a, const TensorView& s, const TensorView& z, size_t n,
                 int64_t h) {
  State st(a.K, a.V);
  if (s.defined())
    for (int64_t i = 0; i < a.K; ++i)
      for (int64_t j = 0; j < a.V; ++j)
        st.S[i * a.V + j] = load_at(s, a.state_offset(s, n, h, i, j));
  if (z.defined())
    for (int64_t i = 0; i < a.K; ++i)
      st.z[i] = load_at(z, n * z.stride(0) + h * z.stride(1) + i * z.stride(2));
  return st;
}

void store_state(const LinearArgs& a, const TensorView& s, const TensorView& z, size_t n, int64_t h,
                 const State& st) {
  if (s.defined())
    for (int64_t i = 0; i < a.K; ++i)
      for (int64_t j = 0; j < a.V; ++j)
        store_at(s, a.state_offset(s, n, h, i, j), st.S[i * a.V + j]);
  if (z.defined())
    for (int64_t i = 0; i < a.K; ++i)
      store_at(z, n * z.stride(0) + h * z.stride(1) + i * z.stride(2), st.z[i]);
}

// One (sequence, head) forward; fills `states` with S_t (and z_t) for every t when asked.
// Backward of one readout, o = scale q^T S or (q^T S) / (q^T z + eps): adds into the state
// gradient d (dS, dz) and into dq.
void readout_backward(const LinearArgs& a, const std::vector<double>& q,
                      const std::vector<double>& dout, const State& st, State& d,
                      std::vector<double>& dq) {
  const int64_t K = static_cast<int64_t>(q.size()), V = static_cast<int64_t>(dout.size());
  if (a.normalize) {
    std::vector<double> num(V, 0.0);
    double den = a.eps;
    for (int64_t i = 0; i < K; ++i) {
      den += q[i] * st.z[i];
      for (int64_t j = 0; j < V; ++j) num[j] += q[i] * st.S[i * V + j];
    }
    double dden = 0;
    for (int64_t j = 0; j < V; ++j) dden -= dout[j] * num[j] / (den * den);
    for (int64_t i = 0; i < K; ++i) {
      for (int64_t j = 0; j < V; ++j) {
        d.S[i * V + j] += q[i] * dout[j] / den;
        dq[i] += st.S[i * V + j] * dout[j] / den;
      }
      d.z[i] += q[i] * dden;
      dq[i] += st.z[i] * dden;
    }
  } else {
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < V; ++j) {
        d.S[i * V + j] += a.scale * q[i] * dout[j];
        dq[i] += a.scale * st.S[i * V + j] * dout[j];
      }
  }
}

void forward_head(const LinearArgs& a, size_t n, int64_t h, std::vector<State>* states) {
  const LinearSeq& s = a.seqs[n];
  const int64_t K = a.K, V = a.V, hk = h / a.group();
  State st = load_state(a, a.h0, a.z0, n, h);
  std::vector<double> gk, gv;
  if (!a.causal) {  // one global state, no gates
    for (int64_t t = 0; t < s.T; ++t) {
      const auto k = row(a.k, s.batch, s.start + t, hk), v = row(a.v, s.batch, s.start + t, h);
      for (int64_t i = 0; i < K; ++i) {
        for (int64_t j = 0; j < V; ++j) st.S[i * V + j] += k[i] * v[j];
        st.z[i] += k[i];
      }
    }
  }
  for (int64_t t = 0; t < s.T; ++t) {
    const int64_t r = s.start + t;
    const auto q = row(a.q, s.batch, r, hk);
    if (a.causal) {
      const auto k = row(a.k, s.batch, r, hk), v = row(a.v, s.batch, r, h);
      gates(a, s, r, h, gk, gv);
      for (int64_t i = 0; i < K; ++i) {
        const double ai = std::exp(gk[i]);
        for (int64_t j = 0; j < V; ++j)
          st.S[i * V + j] = ai * st.S[i * V + j] * std::exp(gv[j]) + k[i] * v[j];
        st.z[i] = ai * st.z[i] + k[i];
      }
      if (states) states->push_back(st);
    }
    std::vector<double> o(V, 0.0);
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < V; ++j) o[j] += q[i] * st.S[i * V + j];
    if (a.normalize) {
      double den = a.eps;
      for (int64_t i = 0; i < K; ++i) den += q[i] * st.z[i];
      for (double& x : o) x /= den;
    } else {
      for (double& x : o) x *= a.scale;
    }
    store_row(a.out, s.batch, r, h, o);
  }
  store_state(a, a.ht, a.zt, n, h, st);
}

}  // namespace

void linear_forward(const LinearArgs& a) {
  for (size_t n = 0; n < a.seqs.size(); ++n)
    for (int64_t h = 0; h < a.H; ++h) forward_head(a, n, h, nullptr);
}

void linear_backward(const LinearArgs& a) {
  const auto& g = a.grads;
  for (const TensorView* t :
       {&g.dq, &g.dk, &g.dv, &g.dg, &g.dg_gamma, &g.dgk, &g.dgv, &g.dh0, &g.dz0})
    if (t->defined()) fill(*t, 0.0);
  const int64_t K = a.K, V = a.V;
  auto add = [](const TensorView& t, int64_t off, double x) {
    store_at(t, off, load_at(t, off) + x);
  };
  auto add_row = [&](const TensorView& t, int64_t b, int64_t r, int64_t h,
                     const std::vector<double>& x) {
    for (size_t d = 0; d < x.size(); ++d)
      add(t, b * t.stride(0) + r * t.stride(1) + h * t.stride(2) + d * t.stride(3), x[d]);
  };
  for (size_t n = 0; n < a.seqs.size(); ++n) {
    const LinearSeq& s = a.seqs[n];
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t hk = h / a.group();
      const State init = load_state(a, a.h0, a.z0, n, h);
      std::vector<State> states;
      // Recompute the forward (states after every token); out is a scratch copy.
      {
        LinearArgs f = a;
        Tensor out = Tensor::empty(a.v.sizes(), DType::kF64);
        f.out = out;
        f.ht = f.zt = TensorView();
        forward_head(f, n, h, &states);
      }
      // dS, dz: gradients with respect to the current state, starting from the final one.
      State d = load_state(a, a.dht, a.dzt, n, h);
      std::vector<double> gk, gv;
      if (!a.causal) {
        // o_t = scale q_t^T S (or normalized) with one S = S0 + sum_t k_t v_t^T.
        State st = init;
        for (int64_t t = 0; t < s.T; ++t) {
          const auto k = row(a.k, s.batch, s.start + t, hk), v = row(a.v, s.batch, s.start + t, h);
          for (int64_t i = 0; i < K; ++i) {
            for (int64_t j = 0; j < V; ++j) st.S[i * V + j] += k[i] * v[j];
            st.z[i] += k[i];
          }
        }
        for (int64_t t = 0; t < s.T; ++t) {
          const int64_t r = s.start + t;
          const auto q = row(a.q, s.batch, r, hk), dout = row(a.dout, s.batch, r, h);
          std::vector<double> dq(K, 0.0);
          readout_backward(a, q, dout, st, d, dq);
          add_row(g.dq, s.batch, r, hk, dq);
        }
        for (int64_t t = 0; t < s.T; ++t) {
          const int64_t r = s.start + t;
          const auto k = row(a.k, s.batch, r, hk), v = row(a.v, s.batch, r, h);
          std::vector<double> dk(K, 0.0), dv(V, 0.0);
          for (int64_t i = 0; i < K; ++i) {
            for (int64_t j = 0; j < V; ++j) {
              dk[i] += d.S[i * V + j] * v[j];
              dv[j] += d.S[i * V + j] * k[i];
            }
            dk[i] += d.z[i];
          }
          add_row(g.dk, s.batch, r, hk, dk);
          add_row(g.dv, s.batch, r, h, dv);
        }
        store_state(a, g.dh0, g.dz0, n, h, d);
        continue;
      }
      for (int64_t t = s.T - 1; t >= 0; --t) {
        const int64_t r = s.start + t;
        const auto q = row(a.q, s.batch, r, hk), k = row(a.k, s.batch, r, hk);
        const auto v = row(a.v, s.batch, r, h), dout = row(a.dout, s.batch, r, h);
        const State& st = states[t];
        const State& prev = t > 0 ? states[t - 1] : init;
        // Output: o = scale q^T S_t, or (q^T S_t) / (q^T z_t + eps).
        std::vector<double> dq(K, 0.0);
        readout_backward(a, q, dout, st, d, dq);
        // Update: S_t = diag(a) S_{t-1} diag(b) + k v^T, z_t = a o z_{t-1} + k.
        gates(a, s, r, h, gk, gv);
        std::vector<double> dk(K, 0.0), dv(V, 0.0), dgk(K, 0.0), dgv(V, 0.0);
        for (int64_t i = 0; i < K; ++i) {
          const double ai = std::exp(gk[i]);
          for (int64_t j = 0; j < V; ++j) {
            const double ds = d.S[i * V + j];
            dk[i] += ds * v[j];
            dv[j] += ds * k[i];
            const double u = ai * prev.S[i * V + j] * std::exp(gv[j]);  // the decayed term
            dgk[i] += ds * u;
            dgv[j] += ds * u;
          }
          dk[i] += d.z[i];
          dgk[i] += d.z[i] * ai * prev.z[i];
        }
        // Gradients of the previous state.
        for (int64_t i = 0; i < K; ++i) {
          const double ai = std::exp(gk[i]);
          for (int64_t j = 0; j < V; ++j) d.S[i * V + j] *= ai * std::exp(gv[j]);
          d.z[i] *= ai;
        }
        add_row(g.dq, s.batch, r, hk, dq);
        add_row(g.dk, s.batch, r, hk, dk);
        add_row(g.dv, s.batch, r, h, dv);
        double dgs = 0;
        for (double x : dgk) dgs += x;
        if (a.gate == GateKind::kScalar && g.dg.defined())
          add(g.dg, s.batch * g.dg.stride(0) + r * g.dg.stride(1) + h * g.dg.stride(2), dgs);
        if (a.gate == GateKind::kConstant && g.dg_gamma.defined())
          add(g.dg_gamma, h * g.dg_gamma.stride(0), dgs);
        if (a.gate == GateKind::kKeyDim && g.dgk.defined()) add_row(g.dgk, s.batch, r, h, dgk);
        if (a.has_gv && g.dgv.defined()) add_row(g.dgv, s.batch, r, h, dgv);
      }
      store_state(a, g.dh0, g.dz0, n, h, d);
    }
  }
}

}  // namespace subq::ref
