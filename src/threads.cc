#include "subq/threads.h"

#include <cerrno>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "subq/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SUBQ_PAUSE() _mm_pause()
#else
#define SUBQ_PAUSE() std::this_thread::yield()
#endif

namespace subq {

namespace {

// How long an idle worker spins before it sleeps on a futex. A wake from the futex costs
// 50-60 us on the KVM machines we measured, a wake from the spin under 1 us, so workers spin
// through the gaps between the ops of a model step (docs/performance.md). An idle process
// stops burning CPU after this long.
constexpr auto kSpinTime = std::chrono::milliseconds(5);

// Spins until pred() holds or kSpinTime passes; returns whether pred() holds. The clock is read
// once per 64 pauses.
template <class Pred>
bool spin_until(Pred&& pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  while (true) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      SUBQ_PAUSE();
    }
    if (std::chrono::steady_clock::now() > deadline) return pred();
  }
}

thread_local bool t_inside_parallel = false;
thread_local int t_thread_index = 0;  // this thread's index in the job it is running

class ThreadPool {
 public:
  explicit ThreadPool(int nthreads) : nthreads_(nthreads) {
    for (int t = 1; t < nthreads_; ++t) workers_.emplace_back([this, t] { worker_loop(t); });
  }
  ~ThreadPool() {
    stop_.store(true);
    generation_.fetch_add(1);
    generation_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int size() const { return nthreads_; }

  void run(int64_t n, const std::function<void(int64_t, int)>& fn) {
    std::lock_guard<std::mutex> lock(run_mutex_);  // one job at a time from outside callers
    fn_ = &fn;
    n_ = n;
    next_.store(0);
    error_ = nullptr;
    pending_.store(nthreads_ - 1);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    work(0);
    // Wait for the workers: spin first (jobs are usually balanced), then sleep.
    spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; });
    for (int p; (p = pending_.load(std::memory_order_acquire)) != 0;) pending_.wait(p);
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void work(int thread) {
    t_inside_parallel = true;
    t_thread_index = thread;
    for (int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_;) {
      try {
        (*fn_)(i, thread);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_);  // stop handing out work
      }
    }
    t_inside_parallel = false;
    t_thread_index = 0;
  }

  void worker_loop(int thread) {
    uint64_t seen = 0;
    while (true) {
      uint64_t g = seen;
      spin_until([&] { return (g = generation_.load(std::memory_order_acquire)) != seen; });
      while (g == seen) {
        generation_.wait(seen);
        g = generation_.load(std::memory_order_acquire);
      }
      seen = g;
      if (stop_.load()) return;
      work(thread);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
    }
  }

  const int nthreads_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_, error_mutex_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<bool> stop_{false};
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0;
  std::exception_ptr error_;
};

int default_threads() {
  if (const char* env = std::getenv("SUBQ_NUM_THREADS"); env && *env) {
    char* end = nullptr;
    errno = 0;
    const long n = std::strtol(env, &end, 10);
    SUBQ_CHECK_ARG(errno == 0 && *end == '\0' && n >= 1 && n <= max_threads(), "SUBQ_NUM_THREADS",
                   "value", detail::concat("an integer in [1, ", max_threads(), "]"), '"', env,
                   '"');
    return static_cast<int>(n);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

std::mutex g_pool_mutex;
std::shared_ptr<ThreadPool>& pool_slot() {
  static std::shared_ptr<ThreadPool> pool;
  return pool;
}

std::shared_ptr<ThreadPool> get_pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  auto& p = pool_slot();
  if (!p) p = std::make_shared<ThreadPool>(default_threads());
  return p;
}

const ParallelBackend* g_backend = nullptr;

// parallel_for on a backend: one body per thread, pulling items from a shared counter in order
// (the dynamic scheduling subq's kernels count on: longest items first).
void run_on_backend(int64_t n, const std::function<void(int64_t, int)>& fn) {
  const int nthreads = static_cast<int>(std::min<int64_t>(n, g_backend->num_threads()));
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  g_backend->run(nthreads, [&](int thread) {
    const bool was_inside = t_inside_parallel;
    const int was_index = t_thread_index;
    t_inside_parallel = true;
    t_thread_index = thread;
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n;) {
      try {
        fn(i, thread);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next.store(n);
      }
    }
    t_inside_parallel = was_inside;
    t_thread_index = was_index;
  });
  if (error) std::rethrow_exception(error);
}

}  // namespace

void set_parallel_backend(const ParallelBackend* backend) {
  g_backend = backend;
  if (backend) {
    // subq's own workers would only spin beside the backend's: stop them.
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    pool_slot().reset();
  }
}

const char* parallel_backend_name() {
  return g_backend ? g_backend->name : "subq";
}

int num_threads() {
  if (g_backend) {
    // SUBQ_NUM_THREADS applies to the backend too, once (and is validated like the pool's).
    static std::once_flag env_applied;
    std::call_once(env_applied, [] {
      if (const char* env = std::getenv("SUBQ_NUM_THREADS"); env && *env)
        g_backend->set_num_threads(default_threads());
    });
    return g_backend->num_threads();
  }
  return get_pool()->size();
}

int max_threads() {
  return static_cast<int>(std::max(64u, 8 * std::max(1u, std::thread::hardware_concurrency())));
}

void set_num_threads(int n) {
  SUBQ_CHECK_ARG(n >= 1 && n <= max_threads(), "set_num_threads", "n",
                 detail::concat("in [1, ", max_threads(), "] (8x this machine's threads)"), n);
  if (g_backend) {
    g_backend->set_num_threads(n);
    return;
  }
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  auto& p = pool_slot();
  if (p && p->size() == n) return;
  p = std::make_shared<ThreadPool>(n);
}

int threads_for(int64_t n) {
  if (t_inside_parallel) return 1;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(n, 1), num_threads()));
}

void parallel_for(int64_t n, const std::function<void(int64_t, int)>& fn) {
  if (n <= 0) return;
  if (t_inside_parallel || n == 1) {
    // Nested or trivial: run here, under the caller's own thread index (0 at top level), so
    // per-thread scratch indexed by it stays private.
    for (int64_t i = 0; i < n; ++i) fn(i, t_thread_index);
    return;
  }
  if (g_backend) {
    if (g_backend->num_threads() == 1) {
      for (int64_t i = 0; i < n; ++i) fn(i, 0);
      return;
    }
    run_on_backend(n, fn);
    return;
  }
  auto pool = get_pool();
  if (pool->size() == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  pool->run(n, fn);
}

}  // namespace subq
