// The thread pool that every fast kernel runs on.
//
// A small persistent pool: workers spin briefly after a job (so back-to-back calls, such as
// decode steps, start in about a microsecond) and then sleep on a futex. The calling thread
// takes part as thread 0. Why a pool of our own and not OpenMP: docs/performance.md.
#pragma once

#include <cstdint>
#include <functional>

namespace subq {

// Threads that ops use, the calling thread included. Defaults to SUBQ_NUM_THREADS if set,
// else the hardware concurrency.
int num_threads();
// The most threads a pool may have: 8 times the hardware's, and at least 64. More is a typo,
// not oversubscription (each worker takes a stack and a scheduler slot), and is refused.
int max_threads();
// 1 <= n <= max_threads(); throws subq::Error otherwise. Restarts the pool's workers.
void set_num_threads(int n);

// Runs fn(i, thread) for every i in [0, n), spreading the i over the pool with dynamic
// scheduling (an atomic counter), in increasing order of i: put the longest items first.
// `thread` is in [0, num_threads()) and is unique among concurrently running calls, so it can
// index per-thread scratch. Blocks until all are done and rethrows the first exception.
// A call from inside a parallel_for runs serially on the calling thread.
void parallel_for(int64_t n, const std::function<void(int64_t i, int thread)>& fn);

// The number of threads parallel_for would use for n items: min(n, num_threads()), or 1 when
// called from inside a parallel_for.
int threads_for(int64_t n);

// Another runtime's threads in place of subq's pool. A process that also runs libtorch's ops
// (the torch binding, the model) installs one that runs on libtorch's intra-op threads
// (at::parallel_for), so that both halves of the work share one team: two pools of spinning
// workers on the same cores starve each other (docs/performance.md). With a backend installed,
// subq's own pool is never started; num_threads() and set_num_threads() are the backend's.
struct ParallelBackend {
  int (*num_threads)();
  void (*set_num_threads)(int n);
  // Runs body(t) for t in [0, n) at once, each on its own thread of the backend, where t is
  // that thread's index (unique among the threads of this call, < num_threads()); returns
  // when all are done. Fewer than n may run (a nested call may run them one after another).
  void (*run)(int n, const std::function<void(int thread)>& body);
  const char* name;
};
// nullptr: back to subq's own pool. Not thread-safe against running ops: install it at start-up.
void set_parallel_backend(const ParallelBackend* backend);
// "subq" or the installed backend's name.
const char* parallel_backend_name();

}  // namespace subq
