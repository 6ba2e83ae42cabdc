// Which implementation an op runs: the fast CPU kernels or the float64 reference.
//
// As in ggml, the reference path can be chosen at run time for any op: per call through the
// op's options (`impl`), for the whole process through set_default_impl(), or from outside
// with the environment variable SUBQ_IMPL=ref.
#pragma once

#include <string>
#include <string_view>

namespace subq {

enum class Impl { kAuto, kFast, kRef };

// kAuto resolves to the process default (SUBQ_IMPL, else kFast).
Impl resolve_impl(Impl requested);
void set_default_impl(Impl impl);
std::string_view impl_name(Impl impl);
Impl impl_from_name(std::string_view name);  // "fast" | "ref"; throws subq::Error otherwise

// The SIMD target the fast kernels dispatch to on this machine, e.g. "AVX2" or "AVX3".
std::string simd_target();

}  // namespace subq
