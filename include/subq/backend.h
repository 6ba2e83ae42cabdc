// Which implementation an op runs: the fast CPU kernels or the float64 reference.
//
// As in ggml, the reference path can be chosen at run time for any op: per call through the
// op's options (`impl`), for the whole process through set_default_impl(), or from outside
// with the environment variable SUBQ_IMPL=ref.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace subq {

enum class Impl { kAuto, kFast, kRef };

// kAuto resolves to the process default (SUBQ_IMPL, else kFast).
Impl resolve_impl(Impl requested);
void set_default_impl(Impl impl);
std::string_view impl_name(Impl impl);
Impl impl_from_name(std::string_view name);  // "fast" | "ref"; throws subq::Error otherwise

// The SIMD target the fast kernels dispatch to on this machine, e.g. "AVX2" or "AVX3".
std::string simd_target();

// The SIMD targets compiled into the kernels that this CPU can run, best first, as Highway
// target bits and names (e.g. AVX2, SSE4, EMU128: the last is the portable fallback).
std::vector<std::pair<int64_t, std::string>> available_simd_targets();
// Makes every kernel dispatch to `target` (one of available_simd_targets()); 0 restores the
// default (the best). For tests and benchmarks of the fallback paths; not thread-safe with
// kernels running.
void force_simd_target(int64_t target);

}  // namespace subq
