// The NAT translation cache (conntrack_cache) on one core, at its default capacity: lookups per
// second on a full cache (hits only, and half hits half misses), inserts per second (filling,
// then evicting at capacity), and its memory at capacity as it counts it (memory_bytes) and as
// the kernel does (resident set before the cache was built and after it was filled).
// Targets: >= 10,000,000 lookups/s, <= 24 MB at 131,072 entries.
//
//   build/bench/bench_conntrack_cache
//   build/bench/bench_conntrack_cache --entries 131072 --lookups 20000000 --reps 5
//
// The last lines are machine-readable, as every bench prints them for bench/run_all:
// "RESULT|conntrack_cache|metric|value|unit|target|verdict".
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "actors/conntrack/conntrack_cache.hpp"

namespace {

using netlens::conntrack_cache;
using netlens::ct_endpoints;
using netlens::ct_entry;
using netlens::ct_tuple;
using netlens::tuple_of;

uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// Rates are per CPU second of this thread, so time the scheduler gives to other processes on
// a busy machine does not count against the cache (caches they share still do).
uint64_t cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Anonymous memory of this process backed by transparent huge pages.
size_t anon_huge_kb() {
  std::FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
  if (f == nullptr)
    return 0;
  char line[256];
  size_t kb = 0;
  while (std::fgets(line, sizeof line, f) != nullptr)
    if (std::sscanf(line, "AnonHugePages: %zu kB", &kb) == 1)
      break;
  std::fclose(f);
  return kb;
}

size_t rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr)
    return 0;
  unsigned long size = 0, resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return n == 2 ? resident * static_cast<size_t>(sysconf(_SC_PAGESIZE)) : 0;
}

void put_addr(uint8_t* a, bool six, uint32_t host_order) {
  const uint32_t be = htonl(host_order);
  if (six) {
    static constexpr uint8_t prefix[12] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(a, prefix, sizeof prefix);
    std::memcpy(a + 12, &be, 4);
  } else {
    std::memcpy(a, &be, 4);
  }
}

// Entry i: a client 10.x.y.z (one per entry) in one of four namespaces reaches a server whose
// address is a bijection of i (so every reply tuple is distinct as well), SNAT'd to the host's
// 192.168.0.1 and a port. One entry in eight is v6, one in four UDP.
ct_entry make_entry(uint32_t i) {
  ct_entry e;
  const bool six = i % 8 == 7;
  e.netns = 4026531840u + i % 4;
  e.family = six ? AF_INET6 : AF_INET;
  e.protocol = i % 4 == 1 ? IPPROTO_UDP : IPPROTO_TCP;
  const uint32_t client = 0x0a000000u | (i & 0xffffffu);
  const uint32_t server = 0x64400000u | ((i * 2654435761u) & 0x3fffffu);
  put_addr(e.orig.saddr, six, client);
  put_addr(e.orig.daddr, six, server);
  e.orig.sport = static_cast<uint16_t>(32768 + (i * 31) % 28232);
  e.orig.dport = i % 3 == 0 ? 443 : 80;
  put_addr(e.reply.saddr, six, server);
  put_addr(e.reply.daddr, six, 0xc0a80001u);
  e.reply.sport = e.orig.dport;
  e.reply.dport = static_cast<uint16_t>(1024 + (i * 7) % 64000);
  return e;
}

struct options {
  uint32_t entries = 131072;
  uint64_t lookups = 20'000'000;
  int reps = 5;
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const unsigned long long v = std::strtoull(argv[i + 1], nullptr, 10);
    if (k == "--entries")
      o.entries = static_cast<uint32_t>(v);
    else if (k == "--lookups")
      o.lookups = v;
    else if (k == "--reps")
      o.reps = static_cast<int>(v);
    else {
      std::fprintf(stderr, "usage: %s [--entries N] [--lookups N] [--reps N]\n", argv[0]);
      std::exit(2);
    }
  }
  if (o.entries == 0 || o.lookups == 0 || o.reps <= 0) {
    std::fprintf(stderr, "entries, lookups and reps must be positive\n");
    std::exit(2);
  }
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs n lookups cycling through keys; returns lookups/s and adds the hits to *hits.
double lookup_rate(conntrack_cache& cache, const std::vector<ct_tuple>& keys, uint64_t n,
                   uint64_t* hits) {
  uint64_t found = 0, sink = 0;
  size_t k = 0;
  const uint64_t t0 = cpu_ns();
  for (uint64_t i = 0; i < n; ++i) {
    if (auto r = cache.lookup(keys[k])) {
      ++found;
      sink += r->nat.dport;
    }
    if (++k == keys.size())
      k = 0;
  }
  const uint64_t t1 = cpu_ns();
  *hits += found;
  // Keeps the translations live so the compiler cannot drop the lookups.
  if (sink == 1)
    std::printf(" ");
  return static_cast<double>(n) * 1e9 / static_cast<double>(t1 - t0);
}

} // namespace

int main(int argc, char** argv) {
  const options opt = parse(argc, argv);
  const uint32_t n = opt.entries;
  const uint32_t total = 4 * n; // 3 * n of the inserts evict
  const uint64_t ttl = 120'000'000'000ull;
  bool ok = true;

  std::printf("== conntrack_cache: %u entries, %u inserts, %llu lookups x %d reps, one core\n", n,
              total, static_cast<unsigned long long>(opt.lookups), opt.reps);
  {
    std::FILE* f = std::fopen("/proc/loadavg", "r");
    char buf[64] = {};
    if (f != nullptr && std::fgets(buf, sizeof buf, f) != nullptr)
      std::printf("load: %s", buf);
    if (f != nullptr)
      std::fclose(f);
  }

  // Memory: the resident set before the cache exists and once it is full.
  const size_t rss_before = rss_bytes();
  conntrack_cache cache(n, ttl, now_ns);
  std::vector<double> fill_rates, evict_rates;
  {
    const uint64_t t0 = cpu_ns();
    for (uint32_t i = 0; i < n; ++i)
      cache.insert(make_entry(i), i % 2 == 0);
    const uint64_t t1 = cpu_ns();
    for (uint32_t i = n; i < total; ++i)
      cache.insert(make_entry(i), i % 2 == 0);
    const uint64_t t2 = cpu_ns();
    fill_rates.push_back(n * 1e9 / static_cast<double>(t1 - t0));
    evict_rates.push_back((total - n) * 1e9 / static_cast<double>(t2 - t1));
  }
  const size_t rss_after = rss_bytes();
  const size_t huge_kb = anon_huge_kb();
  const size_t mem = cache.memory_bytes();
  const auto st = cache.stats();
  if (cache.size() != n || st.evictions != total - n) {
    std::printf("ERROR: size %zu evictions %llu, expected %u and %u\n", cache.size(),
                static_cast<unsigned long long>(st.evictions), n, total - n);
    ok = false;
  }

  // More insert runs on fresh caches, for a median.
  for (int rep = 1; rep < opt.reps; ++rep) {
    conntrack_cache c(n, ttl, now_ns);
    const uint64_t t0 = cpu_ns();
    for (uint32_t i = 0; i < n; ++i)
      c.insert(make_entry(i), i % 2 == 0);
    const uint64_t t1 = cpu_ns();
    for (uint32_t i = n; i < total; ++i)
      c.insert(make_entry(i), i % 2 == 0);
    const uint64_t t2 = cpu_ns();
    fill_rates.push_back(n * 1e9 / static_cast<double>(t1 - t0));
    evict_rates.push_back((total - n) * 1e9 / static_cast<double>(t2 - t1));
  }

  // The cache holds entries [3n, 4n). Hits: both tuples of each, in random order. Misses:
  // tuples of evicted entries, which hash and probe like real keys.
  std::mt19937_64 rng(42);
  std::vector<ct_tuple> hit_keys, candidates;
  hit_keys.reserve(2 * size_t{n});
  candidates.reserve(2 * size_t{n});
  for (uint32_t i = total - n; i < total; ++i) {
    const ct_entry e = make_entry(i);
    hit_keys.push_back(tuple_of(e, e.orig));
    hit_keys.push_back(tuple_of(e, e.reply));
    const ct_entry gone = make_entry(i - (total - n));
    candidates.push_back(i % 2 ? tuple_of(e, e.orig) : tuple_of(e, e.reply)); // even: a hit
    candidates.push_back(i % 2 ? tuple_of(gone, gone.reply) : tuple_of(gone, gone.orig));
  }
  std::shuffle(hit_keys.begin(), hit_keys.end(), rng);
  std::vector<uint32_t> order(candidates.size());
  for (uint32_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<ct_tuple> mixed_keys(order.size());
  uint64_t mixed_expected = 0; // hits in opt.lookups lookups cycling through mixed_keys
  for (size_t j = 0; j < order.size(); ++j) {
    mixed_keys[j] = candidates[order[j]];
    if (order[j] % 2 == 0)
      mixed_expected += opt.lookups / order.size() + (j < opt.lookups % order.size() ? 1 : 0);
  }

  std::vector<double> hit_rates, mixed_rates;
  uint64_t hits = 0;
  lookup_rate(cache, hit_keys, hit_keys.size(), &hits); // warm up
  hits = 0;
  for (int rep = 0; rep < opt.reps; ++rep) {
    hit_rates.push_back(lookup_rate(cache, hit_keys, opt.lookups, &hits));
    if (hits != opt.lookups) {
      std::printf("ERROR: %llu of %llu lookups hit, expected all\n",
                  static_cast<unsigned long long>(hits),
                  static_cast<unsigned long long>(opt.lookups));
      ok = false;
    }
    hits = 0;
    mixed_rates.push_back(lookup_rate(cache, mixed_keys, opt.lookups, &hits));
    if (hits != mixed_expected) {
      std::printf("ERROR: %llu of %llu lookups hit, expected %llu\n",
                  static_cast<unsigned long long>(hits),
                  static_cast<unsigned long long>(opt.lookups),
                  static_cast<unsigned long long>(mixed_expected));
      ok = false;
    }
    hits = 0;
  }

  const double hit = median(hit_rates), mixed = median(mixed_rates);
  const double fill = median(fill_rates), evict = median(evict_rates);
  const long long rss_delta =
      static_cast<long long>(rss_after) - static_cast<long long>(rss_before);
  std::printf("lookup, hits only:        %12.0f /s  (%.1f ns each)\n", hit, 1e9 / hit);
  std::printf("lookup, 50%% hits:         %12.0f /s  (%.1f ns each)\n", mixed, 1e9 / mixed);
  std::printf("insert, filling:          %12.0f /s\n", fill);
  std::printf("insert, evicting at cap:  %12.0f /s\n", evict);
  std::printf("memory_bytes():           %12zu B  (%.2f MiB, %.1f B/entry)\n", mem, mem / 1048576.0,
              static_cast<double>(mem) / n);
  std::printf("RSS before / after fill:  %zu / %zu B, delta %lld B (%.2f MiB)\n", rss_before,
              rss_after, rss_delta, rss_delta / 1048576.0);
  std::printf("in transparent huge pages: %zu kB\n", huge_kb);
  auto verdict = [](bool ok) { return ok ? "PASS" : "FAIL"; };
  std::printf("RESULT|conntrack_cache|lookups/s, hits only|%.0f|lookups/s|>= 10000000|%s\n", hit,
              verdict(hit >= 1e7));
  std::printf("RESULT|conntrack_cache|lookups/s, 50%% hits|%.0f|lookups/s|>= 10000000|%s\n", mixed,
              verdict(mixed >= 1e7));
  std::printf("RESULT|conntrack_cache|inserts/s, filling|%.0f|entries/s|-|-\n", fill);
  std::printf("RESULT|conntrack_cache|inserts/s, evicting|%.0f|entries/s|-|-\n", evict);
  std::printf("RESULT|conntrack_cache|memory at %u entries|%.1f|MB|<= 24|%s\n", n, mem / 1e6,
              verdict(mem <= 24000000));
  std::printf("RESULT|conntrack_cache|RSS growth at %u entries|%.1f|MB|<= 24|%s\n", n,
              rss_delta / 1e6, verdict(rss_delta <= 24000000));
  return ok ? 0 : 1;
}
