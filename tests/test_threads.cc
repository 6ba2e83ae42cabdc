// The thread pool: every index once, exceptions propagate, nested calls run inline.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <stdexcept>
#include <vector>

#include "subq/error.h"
#include "subq/threads.h"

namespace subq {
namespace {

class Threads : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = num_threads(); }
  void TearDown() override { set_num_threads(saved_); }
  int saved_ = 1;
};

TEST_F(Threads, EveryIndexExactlyOnce) {
  for (int t : {1, 2, 3, 8}) {
    set_num_threads(t);
    EXPECT_EQ(num_threads(), t);
    for (int64_t n : {0, 1, 2, 7, 1000}) {
      std::vector<std::atomic<int>> hits(n);
      std::atomic<int> bad_thread{0};
      parallel_for(n, [&](int64_t i, int thread) {
        hits[i].fetch_add(1);
        if (thread < 0 || thread >= t) bad_thread.fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "n " << n << " i " << i;
      EXPECT_EQ(bad_thread.load(), 0);
    }
  }
}

TEST_F(Threads, ThreadIndicesAreExclusive) {
  // Two items never run at the same time under the same thread index.
  set_num_threads(4);
  std::vector<std::atomic<int>> busy(4);
  std::atomic<int> clashes{0};
  parallel_for(2000, [&](int64_t, int thread) {
    if (busy[thread].fetch_add(1) != 0) clashes.fetch_add(1);
    volatile double x = 0;
    for (int k = 0; k < 200; ++k) x = x + k;
    busy[thread].fetch_sub(1);
  });
  EXPECT_EQ(clashes.load(), 0);
}

TEST_F(Threads, ExceptionsReachTheCaller) {
  set_num_threads(2);
  EXPECT_THROW(parallel_for(100,
                            [](int64_t i, int) {
                              if (i == 37) throw Error("item 37");
                            }),
               Error);
  // The pool still works afterwards.
  std::atomic<int> count{0};
  parallel_for(10, [&](int64_t, int) { count.fetch_add(1); });
  EXPECT_EQ(count.load(), 10);
}

TEST_F(Threads, NestedCallsRunInlineOnTheCallersIndex) {
  set_num_threads(2);
  std::atomic<int> mismatches{0}, total{0};
  parallel_for(8, [&](int64_t, int outer) {
    EXPECT_EQ(threads_for(100), 1);
    parallel_for(5, [&](int64_t, int inner) {
      if (inner != outer) mismatches.fetch_add(1);
      total.fetch_add(1);
    });
  });
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(total.load(), 40);
}

TEST_F(Threads, BadCountIsAnError) {
  EXPECT_THROW(set_num_threads(0), Error);
  EXPECT_THROW(set_num_threads(-3), Error);
}

}  // namespace
}  // namespace subq
