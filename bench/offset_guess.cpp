// The offset guesser, cold: each run loads the guessing object, makes its loopback
// connections, copies and scans them, with no cache, exactly as the agent's first start on a
// kernel does. Prints the median and the slowest run over N runs, and the slowest single try.
// Target: all fields guessed in <= 200 ms. Needs root.
//
//   build/bench/bench_offset_guess
//   build/bench/bench_offset_guess --runs 50
//
// The last lines are machine-readable, as every bench prints them for bench/run_all:
// "RESULT|offset_guess|metric|value|unit|target|verdict".
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "actors/offset_guesser/guess_offsets.hpp"
#include "actors/offset_guesser/offset_cache.hpp"

int main(int argc, char** argv) {
  int runs = 20;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--runs N]\n", argv[0]);
      return 2;
    }
  }
  if (runs < 1) {
    std::fprintf(stderr, "--runs must be at least 1\n");
    return 2;
  }
  netlens::guess_settings settings; // no cache_dir: every run guesses
  std::vector<double> ms;
  uint32_t retried = 0;
  for (int i = 0; i < runs; ++i) {
    netlens::guess_report r = netlens::guess_offsets(settings);
    if (!r.ok) {
      std::fprintf(stderr, "run %d failed: %s\n", i + 1, r.error.c_str());
      return 1;
    }
    retried += r.tries > 1;
    ms.push_back(static_cast<double>(r.duration_us) / 1000.0);
  }
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  double median = sorted.size() % 2
                      ? sorted[sorted.size() / 2]
                      : (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]) / 2;
  double max = sorted.back();
  std::printf("offset guess, cold (object load + sockets + scan, no cache), %d runs on %s:\n", runs,
              netlens::kernel_release().c_str());
  std::printf("  median %.1f ms, min %.1f ms, max %.1f ms; %u runs needed more than one try\n",
              median, sorted.front(), max, retried);
  auto verdict = [](bool ok) { return ok ? "PASS" : "FAIL"; };
  std::printf("RESULT|offset_guess|guess time, median of %d cold runs|%.1f|ms|<= 200|%s\n", runs,
              median, verdict(median <= 200));
  std::printf("RESULT|offset_guess|guess time, slowest of %d cold runs|%.1f|ms|<= 200|%s\n", runs,
              max, verdict(max <= 200));
  return 0;
}
