// subq's kernels on libtorch's intra-op threads (subq/threads.h): one team for both halves of
// the work. With two pools on the same cores, the one that just finished spins and starves the
// other: decode of a small model ran 10x slower with subq's pool and libtorch's OpenMP team at
// 2 threads each (docs/torch.md).
//
// at::parallel_for is a header template whose parallel region is compiled here: this file is
// built with -fopenmp (and without the precompiled libtorch headers, which are not), and links
// the libgomp.so.1 that libtorch ships, so the region runs on libtorch's own OpenMP team.
#include <ATen/Parallel.h>

#include <functional>

#include "subq/threads.h"
#include "torch/torch_bridge.h"

#ifndef _OPENMP
#error "torch/parallel_backend.cc must be compiled with -fopenmp (torch/CMakeLists.txt)"
#endif

namespace subq::torch_ops {
namespace {

int torch_num_threads() {
  return at::get_num_threads();
}
void torch_set_num_threads(int n) {
  at::set_num_threads(n);
}
void torch_run(int n, const std::function<void(int)>& body) {
  at::parallel_for(0, n, /*grain_size=*/1, [&](int64_t begin, int64_t end) {
    const int thread = at::get_thread_num();
    for (int64_t i = begin; i < end; ++i) body(thread);
  });
}
constexpr ParallelBackend kTorchBackend{torch_num_threads, torch_set_num_threads, torch_run,
                                        "libtorch"};

// Installed when this library is loaded (by Python, or linked into the model and the CLI).
const bool kInstalled = [] {
  set_parallel_backend(&kTorchBackend);
  return true;
}();

}  // namespace

bool torch_parallel_backend_installed() {
  return kInstalled;
}

}  // namespace subq::torch_ops
