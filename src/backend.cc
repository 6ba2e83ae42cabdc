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

}  // namespace subq
