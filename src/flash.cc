// Public exact-attention entry points: argument validation, then dispatch to the float64
// reference (src/ref) or the fast kernels (src/cpu). Nothing reads tensor memory before every
// check below has passed.
#include "subq/flash.h"

#include <cmath>
#include <string>

#include "src/checks.h"
#include "src/cpu/flash_cpu.h"
#include "src/flash_args.h"
#include "src/ref/flash_ref.h"
#include "subq/error.h"

namespace subq {

namespace {

using detail::concat;
using namespace detail::checks;  // NOLINT: the shared argument checks
using detail::FlashArgs;
using detail::FlashDecodeArgs;
using detail::FlashSeq;

void check_lse(const char* where, const TensorView& lse, const std::vector<int64_t>& shape) {
  check_output(where, "lse", lse, shape);
  SUBQ_CHECK_ARG(lse.dtype() == DType::kF32, where, "lse", "dtype f32", dtype_name(lse.dtype()));
}

// Common options: scale, window, softcap. Fills the resolved fields of `a`.
template <class Args>
void resolve_options(const char* where, const FlashOptions& opt, int64_t D, Args& a) {
  if (opt.softmax_scale) {
    SUBQ_CHECK_ARG(std::isfinite(*opt.softmax_scale), where, "softmax_scale", "a finite value",
                   *opt.softmax_scale);
    a.scale = *opt.softmax_scale;
  } else {
    a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  }
  SUBQ_CHECK_ARG(opt.window_left >= -1, where, "window_size.left", ">= -1 (-1 is unbounded)",
                 opt.window_left);
  SUBQ_CHECK_ARG(opt.window_right >= -1, where, "window_size.right", ">= -1 (-1 is unbounded)",
                 opt.window_right);
  SUBQ_CHECK_ARG(std::isfinite(opt.softcap) && opt.softcap >= 0, where, "softcap",
                 ">= 0 (0 disables it)", opt.softcap);
  a.softcap = opt.softcap;
  a.left = opt.window_left;
  a.right = opt.window_right;
  if (opt.causal) a.right = 0;  // causal is right = 0, whatever the window said
}

std::vector<float> read_alibi(const char* where, const TensorView& s, int64_t nseq, int64_t H) {
  std::vector<float> out;
  if (!s.defined()) return out;
  SUBQ_CHECK_ARG(s.dtype() == DType::kF32, where, "alibi_slopes", "dtype f32",
                 dtype_name(s.dtype()));
  const bool per_head = s.rank() == 1 && s.size(0) == H;
  const bool per_seq = s.rank() == 2 && s.size(0) == nseq && s.size(1) == H;
  SUBQ_CHECK_ARG(per_head || per_seq, where, "alibi_slopes",
                 concat("shape [", H, "] or [", nseq, ", ", H, "]"), s.describe());
  out.resize(nseq * H);
  for (int64_t n = 0; n < nseq; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const double x = per_head ? get_element(s, {h}) : get_element(s, {n, h});
      SUBQ_CHECK_ARG(std::isfinite(x), where, "alibi_slopes", "finite slopes", x);
      out[n * H + h] = static_cast<float>(x);
    }
  return out;
}

FlashArgs make_args(const char* where, const TensorView& q, const TensorView& k,
                    const TensorView& v, const FlashOptions& opt) {
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_attention_inputs(where, {{"q", &q}, {"k", &k}, {"v", &v}}, f64);
  FlashArgs a;
  a.q = q;
  a.k = k;
  a.v = v;
  const int64_t B = q.size(0);
  a.H = q.size(2);
  a.D = q.size(3);
  a.Hkv = k.size(2);
  a.Dv = v.size(3);
  SUBQ_CHECK_ARG(k.size(0) == B, where, "k", concat("batch ", B, " (q.size(0))"), k.size(0));
  SUBQ_CHECK_ARG(v.size(0) == B, where, "v", concat("batch ", B, " (q.size(0))"), v.size(0));
  SUBQ_CHECK_ARG(k.size(3) == a.D, where, "k", concat("head dim ", a.D, " (q.size(3))"), k.size(3));
  SUBQ_CHECK_ARG(v.size(1) == k.size(1), where, "v",
                 concat("sequence length ", k.size(1), " (k.size(1))"), v.size(1));
  SUBQ_CHECK_ARG(v.size(2) == a.Hkv, where, "v", concat("kv heads ", a.Hkv, " (k.size(2))"),
                 v.size(2));
  SUBQ_CHECK_ARG(a.H % a.Hkv == 0, where, "k",
                 concat("kv heads dividing the ", a.H, " query heads (H % Hkv == 0)"), a.Hkv);
  resolve_options(where, opt, a.D, a);

  const bool varlen = opt.cu_seqlens_q.defined() || opt.cu_seqlens_k.defined();
  if (!varlen) {
    for (int64_t b = 0; b < B; ++b) a.seqs.push_back({b, 0, q.size(1), 0, k.size(1)});
  } else {
    SUBQ_CHECK_ARG(opt.cu_seqlens_q.defined() && opt.cu_seqlens_k.defined(), where,
                   opt.cu_seqlens_q.defined() ? "cu_seqlens_k" : "cu_seqlens_q",
                   "both cu_seqlens_q and cu_seqlens_k, or neither", "only one");
    SUBQ_CHECK_ARG(B == 1, where, "q", "batch 1 with cu_seqlens (packed [1, sum T, H, D])", B);
    const auto cq = read_cu_seqlens(where, "cu_seqlens_q", opt.cu_seqlens_q, q.size(1));
    const auto ck = read_cu_seqlens(where, "cu_seqlens_k", opt.cu_seqlens_k, k.size(1));
    SUBQ_CHECK_ARG(cq.size() == ck.size(), where, "cu_seqlens_k",
                   concat(cq.size(), " offsets (as many as cu_seqlens_q)"), ck.size());
    a.varlen = true;
    for (size_t n = 0; n + 1 < cq.size(); ++n)
      a.seqs.push_back({0, cq[n], cq[n + 1] - cq[n], ck[n], ck[n + 1] - ck[n]});
  }
  a.alibi = read_alibi(where, opt.alibi_slopes, static_cast<int64_t>(a.seqs.size()), a.H);
  return a;
}

}  // namespace

FlashArgs detail::make_flash_forward_args(const TensorView& q, const TensorView& k,
                                          const TensorView& v, const TensorView& out,
                                          const TensorView& lse, const FlashOptions& opt) {
  const char* where = "flash_attention_forward";
  FlashArgs a = make_args(where, q, k, v, opt);
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_output(where, "out", out, {q.size(0), q.size(1), a.H, a.Dv}, f64);
  check_lse(where, lse, {q.size(0), a.H, q.size(1)});
  a.out = out;
  a.lse = lse;
  return a;
}

void flash_attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, const TensorView& lse,
                             const FlashOptions& opt) {
  FlashArgs a = detail::make_flash_forward_args(q, k, v, out, lse, opt);
  if (resolve_impl(opt.impl) == Impl::kRef) return ref::flash_forward(a);
  UnitStride uq(a.q, false), uk(a.k, false), uv(a.v, false), uo(a.out, true);
  cpu::flash_forward(a);
  uo.finish();
}

void flash_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, const TensorView& lse, const TensorView& dout,
                              const TensorView& dq, const TensorView& dk, const TensorView& dv,
                              const FlashOptions& opt) {
  const char* where = "flash_attention_backward";
  FlashArgs a = make_args(where, q, k, v, opt);
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  const std::vector<int64_t> oshape = {q.size(0), q.size(1), a.H, a.Dv};
  check_output(where, "out", out, oshape, f64);
  check_output(where, "dout", dout, oshape, f64);
  check_lse(where, lse, {q.size(0), a.H, q.size(1)});
  check_output(where, "dq", dq, q.sizes(), f64);
  check_output(where, "dk", dk, k.sizes(), f64);
  check_output(where, "dv", dv, v.sizes(), f64);
  a.out = out;
  a.lse = lse;
  a.dout = dout;
  a.dq = dq;
  a.dk = dk;
  a.dv = dv;
  if (resolve_impl(opt.impl) == Impl::kRef) return ref::flash_backward(a);
  UnitStride uq(a.q, false), uk(a.k, false), uv(a.v, false), uo(a.out, false), udo(a.dout, false),
      udq(a.dq, true), udk(a.dk, true), udv(a.dv, true);
  cpu::flash_backward(a);
  udq.finish();
  udk.finish();
  udv.finish();
}

void flash_attention_decode(const TensorView& q, const TensorView& k_cache,
                            const TensorView& v_cache, const TensorView& cache_seqlens,
                            const TensorView& k_new, const TensorView& v_new, const TensorView& out,
                            const TensorView& lse, const FlashDecodeOptions& opt) {
  const char* where = "flash_attention_decode";
  check_attention_inputs(where, {{"q", &q}, {"k_cache", &k_cache}, {"v_cache", &v_cache}});
  SUBQ_CHECK_ARG(!opt.cu_seqlens_q.defined() && !opt.cu_seqlens_k.defined(), where, "cu_seqlens",
                 "none (decode takes a padded batch and cache_seqlens)", "given");
  FlashDecodeArgs a;
  a.B = q.size(0);
  a.Tn = q.size(1);
  a.H = q.size(2);
  a.D = q.size(3);
  a.C = k_cache.size(1);
  a.Hkv = k_cache.size(2);
  a.Dv = v_cache.size(3);
  SUBQ_CHECK_ARG(k_cache.size(0) == a.B, where, "k_cache", concat("batch ", a.B, " (q.size(0))"),
                 k_cache.size(0));
  SUBQ_CHECK_ARG(k_cache.size(3) == a.D, where, "k_cache", concat("head dim ", a.D, " (q.size(3))"),
                 k_cache.size(3));
  SUBQ_CHECK_ARG(v_cache.size(0) == a.B && v_cache.size(1) == a.C && v_cache.size(2) == a.Hkv,
                 where, "v_cache", concat("shape [", a.B, ", ", a.C, ", ", a.Hkv, ", Dv]"),
                 v_cache.describe());
  SUBQ_CHECK_ARG(a.H % a.Hkv == 0, where, "k_cache",
                 concat("kv heads dividing the ", a.H, " query heads (H % Hkv == 0)"), a.Hkv);
  resolve_options(where, opt, a.D, a);
  SUBQ_CHECK_ARG(opt.num_splits >= 0, where, "num_splits", ">= 0 (0 picks one)", opt.num_splits);
  a.num_splits = opt.num_splits;
  a.ring = opt.ring_buffer;
  if (a.ring) {
    SUBQ_CHECK_ARG(a.left >= 0, where, "window_size.left",
                   "a bounded left window (>= 0) with ring_buffer", a.left);
    SUBQ_CHECK_ARG(a.left + a.Tn <= a.C, where, "window_size.left",
                   concat("left + Tn <= cache capacity ", a.C, " with ring_buffer, Tn = ", a.Tn),
                   a.left);
  }
  check_output(where, "out", out, {a.B, a.Tn, a.H, a.Dv});
  check_lse(where, lse, {a.B, a.H, a.Tn});

  const bool append = k_new.defined() || v_new.defined();
  if (append) {
    SUBQ_CHECK_ARG(k_new.defined() && v_new.defined(), where, k_new.defined() ? "v_new" : "k_new",
                   "both k_new and v_new, or neither", "only one");
    check_input(where, "k_new", k_new, 4);
    check_input(where, "v_new", v_new, 4);
    check_same_dtype(where, "k_new", k_new, q);
    check_same_dtype(where, "v_new", v_new, q);
    SUBQ_CHECK_ARG(k_new.sizes() == std::vector<int64_t>({a.B, a.Tn, a.Hkv, a.D}), where, "k_new",
                   concat("shape [", a.B, ", ", a.Tn, ", ", a.Hkv, ", ", a.D, "]"),
                   k_new.describe());
    SUBQ_CHECK_ARG(v_new.sizes() == std::vector<int64_t>({a.B, a.Tn, a.Hkv, a.Dv}), where, "v_new",
                   concat("shape [", a.B, ", ", a.Tn, ", ", a.Hkv, ", ", a.Dv, "]"),
                   v_new.describe());
  }
  SUBQ_CHECK_ARG(
      cache_seqlens.defined() && cache_seqlens.rank() == 1 && cache_seqlens.size(0) == a.B, where,
      "cache_seqlens", concat("shape [", a.B, "]"), cache_seqlens.describe());
  SUBQ_CHECK_ARG(cache_seqlens.dtype() == DType::kI32 || cache_seqlens.dtype() == DType::kI64,
                 where, "cache_seqlens", "dtype i32 or i64", dtype_name(cache_seqlens.dtype()));
  for (int64_t b = 0; b < a.B; ++b) {
    const int64_t len = static_cast<int64_t>(get_element(cache_seqlens, {b}));
    const int64_t total = len + (append ? a.Tn : 0);
    SUBQ_CHECK_ARG(len >= 0, where, "cache_seqlens", ">= 0", len, " at batch ", b);
    SUBQ_CHECK_ARG(total >= a.Tn, where, "cache_seqlens",
                   concat("at least Tn = ", a.Tn, " cached tokens (the queries' own keys)"), len,
                   " at batch ", b);
    if (!a.ring)
      SUBQ_CHECK_ARG(total <= a.C, where, "cache_seqlens",
                     concat("room for ", append ? a.Tn : 0, " new tokens in capacity ", a.C), len,
                     " at batch ", b);
    a.total.push_back(total);
  }
  a.alibi = read_alibi(where, opt.alibi_slopes, a.B, a.H);

  if (append) {  // write the new keys and values into their slots
    for (int64_t b = 0; b < a.B; ++b)
      for (int64_t t = 0; t < a.Tn; ++t) {
        const int64_t slot = a.slot(a.total[b] - a.Tn + t);
        copy_into(k_new.narrow(0, b, 1).narrow(1, t, 1),
                  k_cache.narrow(0, b, 1).narrow(1, slot, 1));
        copy_into(v_new.narrow(0, b, 1).narrow(1, t, 1),
                  v_cache.narrow(0, b, 1).narrow(1, slot, 1));
      }
  }
  a.q = q;
  a.k_cache = k_cache;
  a.v_cache = v_cache;
  a.out = out;
  a.lse = lse;
  if (resolve_impl(opt.impl) == Impl::kRef) return ref::flash_decode(a);
  UnitStride uq(a.q, false), uk(a.k_cache, false), uv(a.v_cache, false), uo(a.out, true);
  cpu::flash_decode(a);
  uo.finish();
}

FlashOutput flash_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                            const FlashOptions& opt) {
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_input("flash_attention", "q", q, 4, f64);
  check_input("flash_attention", "k", k, 4, f64);
  check_input("flash_attention", "v", v, 4, f64);
  FlashOutput r;
  r.out = Tensor::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.dtype());
  r.lse = Tensor::empty({q.size(0), q.size(2), q.size(1)}, DType::kF32);
  flash_attention_forward(q, k, v, r.out, r.lse, opt);
  return r;
}

FlashGrads flash_attention_grad(const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const TensorView& lse,
                                const TensorView& dout, const FlashOptions& opt) {
  const bool f64 = resolve_impl(opt.impl) == Impl::kRef;
  check_input("flash_attention_grad", "q", q, 4, f64);
  check_input("flash_attention_grad", "k", k, 4, f64);
  check_input("flash_attention_grad", "v", v, 4, f64);
  FlashGrads g;
  g.dq = Tensor::empty(q.sizes(), q.dtype());
  g.dk = Tensor::empty(k.sizes(), k.dtype());
  g.dv = Tensor::empty(v.sizes(), v.dtype());
  flash_attention_backward(q, k, v, out, lse, dout, g.dq, g.dk, g.dv, opt);
  return g;
}

double flash_forward_flops(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv,
                           bool causal) {
  const double f = 2.0 * B * H * static_cast<double>(Tq) * Tk * (D + Dv);
  return causal ? f / 2 : f;
}

}  // namespace subq
