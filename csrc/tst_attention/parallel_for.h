// A minimal fork-join loop: workers pull item indices from a shared counter, so uneven items
// (the last query tile of a batch) do not stall a static partition.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace spgim::tst {

inline int resolve_threads(int requested) {
  if (requested > 0) {
    return requested;
  }
  const unsigned hardware = std::thread::hardware_concurrency();
  return hardware == 0 ? 1 : static_cast<int>(hardware);
}

template <typename Fn>
void parallel_for(std::int64_t items, int threads, Fn&& fn) {
  const int workers = static_cast<int>(std::min<std::int64_t>(resolve_threads(threads), items));
  if (workers <= 1) {
    for (std::int64_t i = 0; i < items; ++i) {
      fn(i);
    }
    return;
  }
  std::atomic<std::int64_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto work = [&] {
    try {
      for (std::int64_t i = next++; i < items; i = next++) {
        fn(i);
      }
    } catch (...) {
      const std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) {
        failure = std::current_exception();
      }
      next = items;
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<std::size_t>(workers - 1));
  for (int w = 1; w < workers; ++w) {
    pool.emplace_back(work);
  }
  work();
  for (auto& thread : pool) {
    thread.join();
  }
  if (failure) {
    std::rethrow_exception(failure);
  }
}

}  // namespace spgim::tst
