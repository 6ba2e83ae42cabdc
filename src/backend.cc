#include "subq/backend.h"

#include <atomic>
#include <cstdlib>

#include "hwy/targets.h"
#include "subq/error.h"

namespace subq {

namespace {
Impl initial_default() {
  const char* env = std::getenv("SUBQ_IMPL");
  if (env && *env) return impl_from_name(env);
  return Impl::kFast;
}
std::atomic<Impl>& default_impl() {
  static std::atomic<Impl> impl{initial_default()};
  return impl;
}
}  // namespace

Impl resolve_impl(Impl requested) {
  return requested == Impl::kAuto ? default_impl().load() : requested;
}

void set_default_impl(Impl impl) {
  SUBQ_CHECK_ARG(impl != Impl::kAuto, "set_default_impl", "impl", "fast or ref", "auto");
  default_impl().store(impl);
}

std::string_view impl_name(Impl impl) {
  switch (impl) {
    case Impl::kAuto:
      return "auto";
    case Impl::kFast:
      return "fast";
    case Impl::kRef:
      return "ref";
  }
  return "?";
}

Impl impl_from_name(std::string_view name) {
  if (name == "fast") return Impl::kFast;
  if (name == "ref") return Impl::kRef;
  throw_arg_error("impl_from_name", "impl", "fast or ref", detail::concat('"', name, '"'));
}

std::string simd_target() {
  // The best target that is both supported by this CPU and compiled in, which is what
  // HWY_DYNAMIC_DISPATCH picks.
  const int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
  return hwy::TargetName(targets & -targets);
}

std::vector<std::pair<int64_t, std::string>> available_simd_targets() {
  // HWY_TARGETS here is the same list the kernels were compiled for (same definitions).
  std::vector<std::pair<int64_t, std::string>> out;
  for (int64_t bits = hwy::SupportedTargets() & HWY_TARGETS; bits != 0; bits &= bits - 1) {
    const int64_t t = bits & -bits;  // lowest bit = best target
    out.emplace_back(t, hwy::TargetName(t));
  }
  return out;
}

void force_simd_target(int64_t target) {
  hwy::SetSupportedTargetsForTest(0);  // judge `target` against the real CPU, not a mock
  if (target != 0) {
    bool ok = false;
    for (const auto& [t, name] : available_simd_targets()) ok |= t == target;
    SUBQ_CHECK_ARG(ok, "force_simd_target", "target", "one of available_simd_targets() or 0",
                   target);
  }
  hwy::SetSupportedTargetsForTest(target);
}

}  // namespace subq
