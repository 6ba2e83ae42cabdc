// Exact attention decode against a KV cache on the CPU: a few new query tokens against a long
// cache, which makes the work a memory-bound stream over K and V.
//
// Work item = (sequence, range of cache positions): split-KV, so that one long sequence still
// spreads over all threads. An item walks its keys in blocks of kKeyBlock and handles every kv
// head at each position, so K and V are streamed contiguously ([.., C, Hkv, D] rows are Hkv * D
// apart; one head at a time would touch a new page per key). Each query row (head h, token i)
// keeps a running (max, sum, output); at the end the items of a sequence are merged exactly:
//   m = max_s m_s,  l = sum_s l_s exp(m_s - m),  o = sum_s o_s exp(m_s - m) / l.
// With ring_buffer, position p lives in slot p % C.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "src/cpu/flash_cpu.h"
#include "subq/tensor.h"
#include "subq/threads.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/flash_decode.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "src/cpu/attn_tile-inl.h"
#include "src/cpu/prefetch-inl.h"

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace {

using detail::FlashDecodeArgs;
using detail::row_ptr;

// Keys per block: scores of a block for all rows stay in L1 (rows x 64 floats).
constexpr int64_t kKeyBlock = 64;
// K and V rows are asked for this many keys ahead of the one being read: in a model, each call
// reads a layer's cache from memory (1.5 MB at 1K tokens for the default teacher), where the
// hardware prefetchers restart at every item and page. Measured on that model, 1K context,
// Zen 5: the attention of a step 2.1 -> 1.7 ms with 2 threads; 24 keys ahead was no better.
constexpr int64_t kAheadKeys = 8;

// A split is worth its merge only above a few hundred keys.
constexpr int64_t kMinKeysPerSplit = 256;

// Positions [lo, hi) of sequence b that any of its Tn queries can see.
void VisibleRange(const FlashDecodeArgs& a, int64_t b, int64_t& lo, int64_t& hi) {
  const int64_t total = a.total[b];
  lo = a.first_stored(b);
  hi = total;
  // Query i sits at position total - Tn + i.
  if (a.left >= 0) lo = std::max(lo, total - a.Tn - a.left);
  if (a.right >= 0) hi = std::min(hi, total - 1 + a.right + 1);
}

// q . k over DP floats (a multiple of the lane count; padding is zero). Four accumulators hide
// the FMA latency: one chain would wait 4 cycles per vector.
template <class D>
HWY_INLINE float Dot(D df, const float* HWY_RESTRICT q, const float* HWY_RESTRICT k, size_t DP) {
  const size_t L = hn::Lanes(df);
  auto a0 = hn::Zero(df), a1 = a0, a2 = a0, a3 = a0;
  size_t d = 0;
  for (; d + 4 * L <= DP; d += 4 * L) {
    a0 = hn::MulAdd(hn::LoadU(df, q + d), hn::LoadU(df, k + d), a0);
    a1 = hn::MulAdd(hn::LoadU(df, q + d + L), hn::LoadU(df, k + d + L), a1);
    a2 = hn::MulAdd(hn::LoadU(df, q + d + 2 * L), hn::LoadU(df, k + d + 2 * L), a2);
    a3 = hn::MulAdd(hn::LoadU(df, q + d + 3 * L), hn::LoadU(df, k + d + 3 * L), a3);
  }
  for (; d < DP; d += L) a0 = hn::MulAdd(hn::LoadU(df, q + d), hn::LoadU(df, k + d), a0);
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
}

struct Partial {  // per (item, row): running max, sum and output
  float* m;
  float* l;
  float* o;  // rows x DvP
};

void DecodeItem(const FlashDecodeArgs& a, int64_t b, int64_t p_lo, int64_t p_hi, const float* qs,
                size_t DP, size_t DvP, Partial part, float* scores, float* krow, float* vrow) {
  const hn::ScalableTag<float> df;
  using V = hn::Vec<decltype(df)>;
  const size_t L = hn::Lanes(df);
  const int64_t R = a.H * a.Tn, G = a.group(), Tn = a.Tn, total = a.total[b];
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < R; ++r) {
    part.m[r] = neg_inf;
    part.l[r] = 0.f;
    std::fill(part.o + r * DvP, part.o + (r + 1) * DvP, 0.f);
  }
  const bool k_direct = a.k_cache.dtype() == DType::kF32 && a.D % static_cast<int64_t>(L) == 0;
  const bool v_direct = a.v_cache.dtype() == DType::kF32 && a.Dv % static_cast<int64_t>(L) == 0;
  // Bytes of one key's (or value's) row over all kv heads: one run in the cache.
  const int64_t k_key_bytes = a.Hkv * a.D * static_cast<int64_t>(dtype_size(a.k_cache.dtype()));
  const int64_t v_key_bytes = a.Hkv * a.Dv * static_cast<int64_t>(dtype_size(a.v_cache.dtype()));

  for (int64_t p0 = p_lo; p0 < p_hi; p0 += kKeyBlock) {
    const int64_t nk = std::min(kKeyBlock, p_hi - p0);
    // scores[r * kKeyBlock + j] for rows r = h * Tn + i.
    for (int64_t j = 0; j < nk; ++j) {
      const int64_t slot = a.slot(p0 + j);
      if (p0 + j + kAheadKeys < p_hi)  // see kAheadKeys
        PrefetchLines(row_ptr(a.k_cache, b, a.slot(p0 + j + kAheadKeys), 0), k_key_bytes);
      for (int64_t kvh = 0; kvh < a.Hkv; ++kvh) {
        const float* k = reinterpret_cast<const float*>(row_ptr(a.k_cache, b, slot, kvh));
        if (!k_direct) {
          LoadRowF32(k, a.k_cache.dtype(), a.D, krow, DP);
          k = krow;
        }
        for (int64_t r = kvh * G * Tn; r < (kvh + 1) * G * Tn; ++r)
          scores[r * kKeyBlock + j] = Dot(df, qs + r * DP, k, DP);
      }
    }
    // Softcap, ALiBi and the mask, then the online softmax per row, vectorised along the keys.
    // Padding keys up to a whole vector get -inf (exp = 0) and are never used.
    const int64_t nkp = static_cast<int64_t>(RoundUp(nk, L));
    for (int64_t r = 0; r < R; ++r) {
      const int64_t h = r / Tn, i = r % Tn, pos = total - Tn + i;
      float* s = scores + r * kKeyBlock;
      // Keys this query sees within the block: [jlo, jhi).
      int64_t jlo = 0, jhi = nk;
      if (a.left >= 0) jlo = std::max<int64_t>(jlo, pos - a.left - p0);
      if (a.right >= 0) jhi = std::min<int64_t>(jhi, pos + a.right + 1 - p0);
      jhi = std::max(jhi, jlo);
      for (int64_t j = 0; j < jlo; ++j) s[j] = neg_inf;
      for (int64_t j = jhi; j < nkp; ++j) s[j] = neg_inf;
      const V cap = hn::Set(df, a.softcap),
              inv_cap = hn::Set(df, a.softcap > 0 ? 1 / a.softcap : 0);
      const V neg_slope = hn::Set(df, -a.slope(b, h));
      const V vinf = hn::Set(df, neg_inf);
      V vmax = vinf;
      for (int64_t j = 0; j < nkp; j += static_cast<int64_t>(L)) {
        V x = hn::LoadU(df, s + j);
        const auto live = hn::Ne(x, vinf);
        if (a.softcap > 0) x = hn::Mul(cap, hn::Tanh(df, hn::Mul(x, inv_cap)));
        if (a.slope(b, h) != 0.f) {  // distance |pos - (p0 + j + lane)|
          const V dist =
              hn::Abs(hn::Sub(hn::Set(df, static_cast<float>(pos - p0 - j)), hn::Iota(df, 0.f)));
          x = hn::MulAdd(neg_slope, dist, x);
        }
        x = hn::IfThenElse(live, x, vinf);
        hn::StoreU(x, df, s + j);
        vmax = hn::Max(vmax, x);
      }
      const float mx = std::max(part.m[r], hn::GetLane(hn::MaxOfLanes(df, vmax)));
      const float m_safe = mx == neg_inf ? 0.f : mx;
      const float alpha = std::exp(part.m[r] - m_safe);
      const V vm = hn::Set(df, m_safe);
      V vsum = hn::Zero(df);
      for (int64_t j = 0; j < nkp; j += static_cast<int64_t>(L)) {
        const V e = hn::Exp(df, hn::Sub(hn::LoadU(df, s + j), vm));
        hn::StoreU(e, df, s + j);
        vsum = hn::Add(vsum, e);
      }
      part.l[r] = part.l[r] * alpha + hn::GetLane(hn::SumOfLanes(df, vsum));
      part.m[r] = mx;
      if (alpha != 1.f) {
        float* o = part.o + r * DvP;
        const V va = hn::Set(df, alpha);
        for (size_t d = 0; d < DvP; d += L)
          hn::StoreU(hn::Mul(va, hn::LoadU(df, o + d)), df, o + d);
      }
    }
    // o_r += sum_j p_rj v_j, V streamed once for all rows. (Measured: batching four keys per
    // pass over o, to save its loads and stores, was slower; the stream of V is the limit.)
    for (int64_t j = 0; j < nk; ++j) {
      const int64_t slot = a.slot(p0 + j);
      if (p0 + j + kAheadKeys < p_hi)
        PrefetchLines(row_ptr(a.v_cache, b, a.slot(p0 + j + kAheadKeys), 0), v_key_bytes);
      for (int64_t kvh = 0; kvh < a.Hkv; ++kvh) {
        const float* v = reinterpret_cast<const float*>(row_ptr(a.v_cache, b, slot, kvh));
        if (!v_direct) {
          LoadRowF32(v, a.v_cache.dtype(), a.Dv, vrow, DvP);
          v = vrow;
        }
        for (int64_t r = kvh * G * Tn; r < (kvh + 1) * G * Tn; ++r) {
          const float p = scores[r * kKeyBlock + j];
          if (p == 0.f) continue;
          const V vp = hn::Set(df, p);
          float* o = part.o + r * DvP;
          for (size_t d = 0; d < DvP; d += L)
            hn::StoreU(hn::MulAdd(vp, hn::LoadU(df, v + d), hn::LoadU(df, o + d)), df, o + d);
        }
      }
    }
  }
}

void FlashDecode(const FlashDecodeArgs& a) {
  const hn::ScalableTag<float> df;
  const size_t L = hn::Lanes(df);
  const size_t DP = RoundUp(a.D, L), DvP = RoundUp(a.Dv, L);
  const int64_t R = a.H * a.Tn;
  const int threads = num_threads();

  // Split each sequence's visible range into about 4 chunks per thread (for balance), none
  // shorter than kMinKeysPerSplit, unless num_splits says otherwise.
  struct Item {
    int64_t b, lo, hi;
  };
  std::vector<Item> items;
  std::vector<int64_t> first_item(a.B + 1);
  for (int64_t b = 0; b < a.B; ++b) {
    first_item[b] = static_cast<int64_t>(items.size());
    int64_t lo, hi;
    VisibleRange(a, b, lo, hi);
    const int64_t n = std::max<int64_t>(0, hi - lo);
    int64_t splits = a.num_splits;
    if (splits == 0) {
      const int64_t want = (4 * threads + a.B - 1) / a.B;
      splits = std::clamp<int64_t>(n / kMinKeysPerSplit, 1, std::max<int64_t>(want, 1));
    }
    splits = std::clamp<int64_t>(splits, 1, std::max<int64_t>(n, 1));
    for (int64_t s = 0; s < splits; ++s)
      items.push_back({b, lo + n * s / splits, lo + n * (s + 1) / splits});
  }
  first_item[a.B] = static_cast<int64_t>(items.size());

  // Queries, scaled, as f32 rows: qs[b][r = h * Tn + i][DP].
  Scratch qs(static_cast<size_t>(a.B * R) * DP);
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t h = 0; h < a.H; ++h)
      for (int64_t i = 0; i < a.Tn; ++i) {
        float* dst = qs.data() + (b * R + h * a.Tn + i) * DP;
        LoadRowF32(row_ptr(a.q, b, i, h), a.q.dtype(), a.D, dst, DP);
        for (int64_t d = 0; d < a.D; ++d) dst[d] *= a.scale;
      }

  const size_t part_floats = static_cast<size_t>(R) * (2 + DvP);
  Scratch parts(items.size() * part_floats);
  const size_t work_floats = RoundUp(static_cast<size_t>(R * kKeyBlock) + DP + DvP, 16);
  Scratch work(work_floats * threads);
  auto part_of = [&](size_t item) {
    float* base = parts.data() + item * part_floats;
    return Partial{base, base + R, base + 2 * R};
  };
  parallel_for(static_cast<int64_t>(items.size()), [&](int64_t it, int thread) {
    const Item& item = items[it];
    float* w = work.data() + work_floats * thread;
    DecodeItem(a, item.b, item.lo, item.hi, qs.data() + item.b * R * DP, DP, DvP, part_of(it), w,
               w + R * kKeyBlock, w + R * kKeyBlock + DP);
  });

  // Merge the splits of each sequence.
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> o(DvP);
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t r = 0; r < R; ++r) {
      float m = neg_inf;
      for (int64_t it = first_item[b]; it < first_item[b + 1]; ++it)
        m = std::max(m, part_of(it).m[r]);
      float l = 0;
      std::fill(o.begin(), o.end(), 0.f);
      if (m != neg_inf) {
        for (int64_t it = first_item[b]; it < first_item[b + 1]; ++it) {
          const Partial p = part_of(it);
          if (p.m[r] == neg_inf) continue;
          const float w = std::exp(p.m[r] - m);
          l += p.l[r] * w;
          for (size_t d = 0; d < DvP; ++d) o[d] += w * p.o[r * DvP + d];
        }
      }
      const int64_t h = r / a.Tn, i = r % a.Tn;
      const float inv = l > 0 ? 1.f / l : 0.f;
      for (float& x : o) x *= inv;
      StoreRowF32(o.data(), a.Dv, (row_ptr(a.out, b, i, h)), a.out.dtype());
      a.lse.data_as<float>()[b * a.lse.stride(0) + h * a.lse.stride(1) + i * a.lse.stride(2)] =
          l > 0 ? m + std::log(l) : neg_inf;
    }
  }
}

}  // namespace
}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq::cpu {

HWY_EXPORT(FlashDecode);

void flash_decode(const detail::FlashDecodeArgs& a) {
  HWY_DYNAMIC_DISPATCH(FlashDecode)(a);
}

}  // namespace subq::cpu
#endif
