// gemm (subq/gemm.h): the classic blocked GEMM (Goto and van de Geijn; BLIS's loops) around
// subq's register tile.
//
//   for each block of NC columns of b and c
//     for each pass over KC rows of b (columns of a), the passes of equal depth
//       pack b's KC x NC block into panels of NR = kNV vectors (shared by the threads)
//       in parallel, for each block of MC rows of a and c:
//         a in place if its rows are contiguous, else packed into k-major kGemmMR-row panels
//         for each NR panel of b: for each kGemmMR panel of a: the register tile
//
// Packing b makes it contiguous whatever its strides (so b = Wᵀ costs only the pack) and
// zero-pads its edge, so the tile runs at full width: a KC x NR panel of b (32 KB on AVX-512)
// stays in L1 while the row panels of a stream past it from L2.
#include "subq/gemm.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/cpu/gemm.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include "hwy/highway.h"
#include "src/cpu/gemm_tile-inl.h"
#include "subq/error.h"
#include "subq/threads.h"

#ifndef SUBQ_CPU_GEMM_CALL_DEFINED  // once, not per target
#define SUBQ_CPU_GEMM_CALL_DEFINED
namespace subq::cpu {

// The plain description of one call, as the checks leave it (element strides).
struct GemmCall {
  int64_t M, N, K;
  const float* a;
  int64_t a_rs, a_cs;
  const float* b;
  int64_t b_rs, b_cs;
  float* c;
  int64_t c_rs;
  bool accumulate;
};

}  // namespace subq::cpu
#endif

HWY_BEFORE_NAMESPACE();
namespace subq::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Block sizes (docs/performance.md, "GEMM"; 128 and 384 for KC, 96 and 384 for MC, 256 and 512
// for NC all measured slower or no faster). KC: the most depth of one pass, so that a KC x NR
// panel of b fits in L1 (32 KB for NR = 32 floats on AVX-512, 16 KB on AVX2). MC: rows of a per
// task (MC x KC floats = 192 KB: in L2 on every CPU we target), a multiple of both tile heights.
// NC: columns of b packed per pass (KC x NC floats = 2 MB, shared by the threads from L2/L3).
constexpr int64_t kKC = 256;
// Rows of the register tile. On AVX-512 (32 registers) 12 x 2 vectors = 24 accumulators + 2 b
// vectors + 1 broadcast: 14 loads per 24 FMAs, against 10 per 16 for the attention kernels'
// 8 x 2 (kMR), whose row blocks must divide 96. The 16-register targets keep 6 x 2.
#if HWY_TARGET <= HWY_AVX3 && HWY_ARCH_X86
constexpr size_t kGemmMR = 12;
#else
constexpr size_t kGemmMR = kMR;
#endif
constexpr int64_t kMC = 192;  // 16 x 12 rows, 32 x 6
constexpr int64_t kNC = 2048;

// Packs rows [k0, k0 + kc) x columns [n0, n0 + nc) of b into panels of NR columns:
// dst[(j / NR) * kc * NR + k * NR + j % NR], zero beyond column nc. Panels [p0, p1).
void PackB(const GemmCall& g, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int64_t NR,
           float* HWY_RESTRICT dst, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    float* HWY_RESTRICT panel = dst + p * kc * NR;
    const int64_t j0 = p * NR, nr = std::min(NR, nc - j0);
    if (g.b_cs == 1) {  // rows of b contiguous: copy row pieces
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = g.b + (k0 + k) * g.b_rs + n0 + j0;
        std::memcpy(panel + k * NR, src, static_cast<size_t>(nr) * sizeof(float));
        std::fill(panel + k * NR + nr, panel + (k + 1) * NR, 0.f);
      }
    } else if (g.b_rs == 1 && nr == NR && (n0 + nc) * g.b_cs <= INT32_MAX) {
      // Columns contiguous (b = Wᵀ): a transpose. One gather per vector of the panel's row k
      // (lanes from NR rows of W, all within the same few cache lines for consecutive k):
      // forward GEMMs 5-10 % faster in all than with the scalar loop below (1 thread, this
      // project's Sapphire Rapids machine).
      const hn::ScalableTag<float> d;
      const hn::RebindToSigned<decltype(d)> di;
      const size_t L = hn::Lanes(d);
      const float* base = g.b + k0 + (n0 + j0) * g.b_cs;
      hn::Vec<decltype(di)> idx[kNV];
      for (size_t v = 0; v < kNV; ++v)
        idx[v] = hn::Mul(hn::Iota(di, static_cast<int32_t>(v * L)),
                         hn::Set(di, static_cast<int32_t>(g.b_cs)));
      for (int64_t k = 0; k < kc; ++k)
        for (size_t v = 0; v < kNV; ++v)
          hn::StoreU(hn::GatherIndex(d, base + k, idx[v]), d, panel + k * NR + v * L);
    } else {  // columns contiguous, edge panel: read each column front to back
      for (int64_t j = 0; j < nr; ++j) {
        const float* src = g.b + k0 * g.b_rs + (n0 + j0 + j) * g.b_cs;
        for (int64_t k = 0; k < kc; ++k) panel[k * NR + j] = src[k * g.b_rs];
      }
      for (int64_t k = 0; k < kc; ++k) std::fill(panel + k * NR + nr, panel + (k + 1) * NR, 0.f);
    }
  }
}

// Packs rows [m0, m0 + mc) x columns [k0, k0 + kc) of a into panels of kGemmMR rows, k-major:
// dst[(i / MR) * kc * MR + k * MR + i % MR], zero beyond row mc.
void PackA(const GemmCall& g, int64_t m0, int64_t mc, int64_t k0, int64_t kc,
           float* HWY_RESTRICT dst) {
  const int64_t MR = static_cast<int64_t>(kGemmMR);
  for (int64_t i0 = 0; i0 < mc; i0 += MR) {
    float* HWY_RESTRICT panel = dst + (i0 / MR) * kc * MR;
    const int64_t mr = std::min(MR, mc - i0);
    for (int64_t r = 0; r < mr; ++r) {
      const float* src = g.a + (m0 + i0 + r) * g.a_rs + k0 * g.a_cs;
      for (int64_t k = 0; k < kc; ++k) panel[k * MR + r] = src[k * g.a_cs];
    }
    for (int64_t r = mr; r < MR; ++r)
      for (int64_t k = 0; k < kc; ++k) panel[k * MR + r] = 0.f;
  }
}

// Where the tiles read a's rows [m0, m0 + mc) x columns [k0, k0 + kc) from: in place when a's
// rows are contiguous (x and dy of a linear layer: packing would only copy them), else from a
// packed copy (k-major panels of kGemmMR rows). A last panel of fewer than kGemmMR rows is
// always packed, zero-padded, so that every tile runs full size.
struct ABlock {
  const float* a;  // in place: row m0 + i at a + i * rs; packed: panel p at a + p * kc * MR
  int64_t rs;      // in place: a's row stride
  bool in_place;
  int64_t full_rows;  // rows read through a (a multiple of kGemmMR); the rest from tail
  const float* tail;  // the packed last panel, or null
};

// One full tile, a read in place (rows contiguous, row stride rs) or packed (k-major panel). The
// unit stride is a constant in each call, so that the broadcasts' addresses fold.
HWY_INLINE void Tile(bool in_place, size_t kc, const float* a, size_t rs, const float* b,
                     size_t ldb, float* c, size_t ldc, TileInit init) {
  if (in_place) {
    MicroTile<kGemmMR, kNV>(kc, a, rs, 1, b, ldb, c, ldc, init, nullptr);
  } else {
    MicroTile<kGemmMR, kNV>(kc, a, 1, kGemmMR, b, ldb, c, ldc, init, nullptr);
  }
}

// c[m0 .. m0 + mc, n0 + panels [p0, p1)) (init) a block x packed b panels. An edge tile (fewer
// than NR columns) goes through a buffer.
void BlockTimesPanels(const GemmCall& g, const ABlock& ab, int64_t m0, int64_t mc,
                      const float* bpack, int64_t kc, int64_t n0, int64_t nc, int64_t NR,
                      int64_t p0, int64_t p1, TileInit init) {
  constexpr int64_t MR = static_cast<int64_t>(kGemmMR);
  // One tile (NR = kNV vectors of at most HWY_MAX_BYTES).
  alignas(64) float edge[kGemmMR * kNV * (HWY_MAX_BYTES / sizeof(float))];
  const size_t ukc = static_cast<size_t>(kc), uNR = static_cast<size_t>(NR);
  for (int64_t p = p0; p < p1; ++p) {
    const float* bpanel = bpack + p * kc * NR;
    const int64_t j0 = p * NR, nr = std::min(NR, nc - j0);
    for (int64_t i0 = 0; i0 < mc; i0 += MR) {
      const bool from_a = i0 < ab.full_rows, in_place = from_a && ab.in_place;
      const float* a = !from_a ? ab.tail : in_place ? ab.a + i0 * ab.rs : ab.a + i0 * kc;
      const size_t rs = static_cast<size_t>(ab.rs);
      const int64_t mr = std::min(MR, mc - i0);
      float* cp = g.c + (m0 + i0) * g.c_rs + n0 + j0;
      // The C tile is read and written once per depth pass, after kc steps: ask for its lines
      // now, so that the misses (C is larger than the caches) overlap the FMAs.
      if (init != TileInit::kOverwrite)
        for (int64_t r = 0; r < mr; ++r) {
          __builtin_prefetch(cp + r * g.c_rs);
          __builtin_prefetch(cp + r * g.c_rs + NR - 1);
        }
      if (nr == NR && mr == MR) {
        Tile(in_place, ukc, a, rs, bpanel, uNR, cp, static_cast<size_t>(g.c_rs), init);
        continue;
      }
      Tile(in_place, ukc, a, rs, bpanel, uNR, edge, uNR, TileInit::kOverwrite);
      for (int64_t r = 0; r < mr; ++r)
        for (int64_t j = 0; j < nr; ++j) {
          float& out = cp[r * g.c_rs + j];
          out = init == TileInit::kOverwrite ? edge[r * NR + j] : out + edge[r * NR + j];
        }
    }
  }
}

void Gemm(const GemmCall& g) {
  const int64_t NR = static_cast<int64_t>(kNV * hn::Lanes(hn::ScalableTag<float>()));
  const int64_t nc_max = std::min(kNC, (g.N + NR - 1) / NR * NR);
  // Depth passes of equal size (K = 576 as 3 x 192, not 256 + 256 + 64): a short last pass
  // would pay the C tile's loads and stores for little work.
  const int64_t k_passes = (g.K + kKC - 1) / kKC;
  const int64_t kc_max = (g.K + k_passes - 1) / k_passes;
  const int64_t MR = static_cast<int64_t>(kGemmMR);
  const int64_t mc_max = std::min(kMC, (g.M + MR - 1) / MR * MR);
  Scratch bpack(static_cast<size_t>(kc_max * nc_max));
  Scratch apack(static_cast<size_t>(mc_max * kc_max) * static_cast<size_t>(num_threads()));
  const int64_t m_blocks = (g.M + kMC - 1) / kMC;
  // a in place when its rows are contiguous (x, dy). dyᵀ (columns contiguous) is packed: in
  // place, each of its k steps jumps a whole row of dy, and it measured 15-20 % slower.
  const bool a_in_place = g.a_cs == 1;
  for (int64_t n0 = 0; n0 < g.N; n0 += kNC) {
    const int64_t nc = std::min(kNC, g.N - n0);
    const int64_t panels = (nc + NR - 1) / NR;
    // Few row blocks (a short M) would leave threads idle: split the panels among tasks too.
    const int64_t n_split =
        std::clamp<int64_t>((2 * threads_for(panels) + m_blocks - 1) / m_blocks, 1, panels);
    for (int64_t k0 = 0; k0 < g.K; k0 += kc_max) {
      const int64_t kc = std::min(kc_max, g.K - k0);
      const TileInit init =
          (k0 == 0 && !g.accumulate) ? TileInit::kOverwrite : TileInit::kAccumulate;
      parallel_for(panels,
                   [&](int64_t p, int) { PackB(g, k0, kc, n0, nc, NR, bpack.data(), p, p + 1); });
      parallel_for(m_blocks * n_split, [&](int64_t task, int thread) {
        const int64_t mb = task / n_split, part = task % n_split;
        const int64_t m0 = mb * kMC, mc = std::min(kMC, g.M - m0);
        const int64_t p0 = panels * part / n_split, p1 = panels * (part + 1) / n_split;
        float* ap =
            apack.data() + static_cast<size_t>(thread) * static_cast<size_t>(mc_max * kc_max);
        ABlock ab{ap, 0, false, (mc + MR - 1) / MR * MR, nullptr};
        if (a_in_place) {
          ab = ABlock{g.a + m0 * g.a_rs + k0, g.a_rs, true, mc / MR * MR, ap};
          if (ab.full_rows < mc) PackA(g, m0 + ab.full_rows, mc - ab.full_rows, k0, kc, ap);
        } else {
          PackA(g, m0, mc, k0, kc, ap);
        }
        BlockTimesPanels(g, ab, m0, mc, bpack.data(), kc, n0, nc, NR, p0, p1, init);
      });
    }
  }
}

}  // namespace subq::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace subq {
namespace cpu {
HWY_EXPORT(Gemm);
}  // namespace cpu

void gemm(const TensorView& a, const TensorView& b, const TensorView& c, bool accumulate) {
  auto check2d = [](const TensorView& t, const char* name, const char* what) {
    SUBQ_CHECK_ARG(t.defined() && t.rank() == 2 && t.dtype() == DType::kF32, "gemm", name, what,
                   t.defined() ? t.describe() : "undefined");
  };
  check2d(a, "a", "a 2-D f32 tensor [M, K]");
  check2d(b, "b", "a 2-D f32 tensor [K, N]");
  check2d(c, "c", "a 2-D f32 tensor [M, N]");
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  SUBQ_CHECK_ARG(b.size(0) == K, "gemm", "b", detail::concat("[", K, ", N] (a is [M, ", K, "])"),
                 b.describe());
  SUBQ_CHECK_ARG(c.size(0) == M && c.size(1) == N && (c.stride(1) == 1 || N <= 1), "gemm", "c",
                 detail::concat("[", M, ", ", N, "] with contiguous rows"), c.describe());
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) fill(c, 0.0);
    return;
  }
  const cpu::GemmCall g{M,
                        N,
                        K,
                        a.data_as<const float>(),
                        a.stride(0),
                        a.stride(1),
                        b.data_as<const float>(),
                        b.stride(0),
                        b.stride(1),
                        c.data_as<float>(),
                        c.stride(0),
                        accumulate};
  HWY_DYNAMIC_DISPATCH(cpu::Gemm)(g);
}

}  // namespace subq
#endif
