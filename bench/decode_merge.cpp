// Throughput of the user-space path every closed connection takes, on one core: the byte image
// the kernel writes into the ring buffer is decoded (decode_closed_record), the batch is merged
// into the tracer's per-client state (client_registry::add_closed), and one client collects
// after every batch, as a fleet pipeline polling the API would. Target: >= 2,000,000 records/s.
//
//   build/bench/bench_decode_merge                       (all variants)
//   build/bench/bench_decode_merge --benchmark_filter='BM_decode_merge/1024$'
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "bpf/netlens_records.h"
#include "flow/client_registry.hpp"
#include "flow/record_decoder.hpp"

namespace {

using netlens::client_registry;
using netlens::client_registry_limits;
using netlens::connection_view;
using netlens::decode_closed_record;
using netlens::decode_status;

// Distinct records in the pool; the benchmark cycles through them. 16 Ki records of 160 bytes
// is 2.5 MiB: larger than L2, about what a busy ring buffer holds between two polls.
constexpr size_t k_pool_records = 16384;
constexpr uint64_t k_now_ns = 1'000'000'000'000ull;

// The four shapes the kernel emits: TCP over v4, TCP on a dual-stack socket talking to a v4
// peer (v4-mapped v6, which the decoder normalises), UDP over v4, and TCP over real v6.
enum class shape { tcp4, tcp_mapped, udp4, tcp6 };

void put_v4(uint8_t* addr16, uint32_t host_order) {
  uint32_t be = htonl(host_order);
  std::memcpy(addr16, &be, 4);
}

void put_mapped(uint8_t* addr16, uint32_t host_order) {
  std::memset(addr16, 0, 10);
  addr16[10] = 0xff;
  addr16[11] = 0xff;
  uint32_t be = htonl(host_order);
  std::memcpy(addr16 + 12, &be, 4);
}

void put_v6(uint8_t* addr16, uint32_t low) {
  static constexpr uint8_t prefix[12] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(addr16, prefix, 12);
  uint32_t be = htonl(low);
  std::memcpy(addr16 + 12, &be, 4);
}

nl_closed_record make_record(size_t i) {
  nl_closed_record rec;
  std::memset(&rec, 0, sizeof(rec));
  rec.magic = NL_RECORD_MAGIC;
  rec.version = NL_RECORD_VERSION;
  rec.size = sizeof(nl_closed_record);
  nl_conn& c = rec.conn;
  uint32_t local = 0x0a000000u | static_cast<uint32_t>((i * 2654435761u) & 0xffffffu);
  uint32_t peer = 0xc0a80000u | static_cast<uint32_t>((i * 40503u) & 0xffffu);
  auto s = static_cast<shape>(i % 4);
  switch (s) {
  case shape::tcp4:
  case shape::udp4:
    c.family = AF_INET;
    put_v4(c.saddr, local);
    put_v4(c.daddr, peer);
    break;
  case shape::tcp_mapped:
    c.family = AF_INET6;
    put_mapped(c.saddr, local);
    put_mapped(c.daddr, peer);
    break;
  case shape::tcp6:
    c.family = AF_INET6;
    put_v6(c.saddr, local);
    put_v6(c.daddr, peer);
    break;
  }
  c.protocol = s == shape::udp4 ? IPPROTO_UDP : IPPROTO_TCP;
  c.cookie = 0x100000000ull + i * 7919u; // distinct, not dense, like the kernel's cookies
  c.sock_id = c.cookie;
  c.sport = static_cast<uint16_t>(32768 + (i * 31) % 28232);
  c.dport = static_cast<uint16_t>(i % 3 == 0 ? 443 : 1024 + (i * 17) % 50000);
  c.direction = i % 2 ? NL_DIR_OUTGOING : NL_DIR_INCOMING;
  c.tcp_state = c.protocol == IPPROTO_TCP ? 7 /* TCP_CLOSE */ : 0;
  c.flags = c.protocol == IPPROTO_TCP ? NL_FLAG_TCP_BASE_KNOWN : 0;
  c.start_ns = k_now_ns - 5'000'000'000ull + i * 1000;
  c.last_ns = c.start_ns + 1'000'000 + (i % 1000) * 1000;
  c.bytes_sent = 64 + (i * 13) % 100000;
  c.bytes_recv = 64 + (i * 29) % 1000000;
  c.packets_sent = 2 + i % 50;
  c.packets_recv = 2 + i % 70;
  c.retransmits = static_cast<uint32_t>(i % 97 == 0);
  c.srtt_us = static_cast<uint32_t>(20 + i % 500);
  c.rttvar_us = static_cast<uint32_t>(5 + i % 100);
  c.netns = 4026531840u + static_cast<uint32_t>(i % 3);
  c.pid = static_cast<uint32_t>(1000 + i % 400);
  std::snprintf(c.comm, sizeof(c.comm), "worker-%zu", i % 64);
  return rec;
}

// The byte images, laid out back to back as records sit in the ring buffer (8-byte aligned).
class record_pool {
public:
  record_pool() : bytes_(k_pool_records * sizeof(nl_closed_record)) {
    static_assert(sizeof(nl_closed_record) % 8 == 0, "ring buffer records are 8-byte aligned");
    for (size_t i = 0; i < k_pool_records; ++i) {
      nl_closed_record rec = make_record(i);
      std::memcpy(bytes_.data() + i * sizeof(rec), &rec, sizeof(rec));
    }
  }
  const void* at(size_t i) const {
    return bytes_.data() + (i % k_pool_records) * sizeof(nl_closed_record);
  }

private:
  std::vector<unsigned char> bytes_;
};

const record_pool& pool() {
  static const record_pool p;
  return p;
}

// Decodes records [first, first + n) of the pool into batch; returns how many were not ok.
size_t decode_batch(size_t first, size_t n, std::vector<nl_conn>& batch) {
  batch.resize(n);
  size_t bad = 0;
  for (size_t k = 0; k < n; ++k)
    bad += decode_closed_record(pool().at(first + k), sizeof(nl_closed_record), batch[k]) !=
           decode_status::ok;
  return bad;
}

// The whole path: decode a batch, merge it, one client collects.
void BM_decode_merge(benchmark::State& state) {
  const auto batch_size = static_cast<size_t>(state.range(0));
  client_registry registry{client_registry_limits{}};
  const std::string client = "bench";
  const std::vector<nl_conn> active; // closed-connection path only
  std::vector<nl_conn> batch;
  batch.reserve(batch_size);
  std::vector<connection_view> out;
  size_t next = 0, bad = 0, collected = 0;
  for (auto _ : state) {
    bad += decode_batch(next, batch_size, batch);
    next += batch_size;
    registry.add_closed(batch);
    registry.collect(client, active, k_now_ns, out);
    collected += out.size();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  if (bad != 0 || collected != state.iterations() * batch_size)
    state.SkipWithError("records rejected or not collected");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch_size));
  state.counters["ns_per_record"] =
      benchmark::Counter(static_cast<double>(state.iterations() * batch_size),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["closed_dropped"] = static_cast<double>(registry.stats().closed_dropped);
}
BENCHMARK(BM_decode_merge)->Arg(1024)->Arg(64)->Arg(4096);

// The same batches with a client that also has active connections to report: each collect
// walks them and rebuilds its delta state, as it does in the agent on every API call.
void BM_decode_merge_with_active(benchmark::State& state) {
  const size_t batch_size = 1024;
  const auto n_active = static_cast<size_t>(state.range(0));
  client_registry registry{client_registry_limits{}};
  const std::string client = "bench";
  std::vector<nl_conn> active;
  decode_batch(k_pool_records / 2, n_active, active);
  for (auto& c : active)
    c.sock_id ^= 0x8000000000000000ull; // not among the closed ones
  std::vector<nl_conn> batch;
  batch.reserve(batch_size);
  std::vector<connection_view> out;
  size_t next = 0;
  for (auto _ : state) {
    decode_batch(next, batch_size, batch);
    next += batch_size;
    registry.add_closed(batch);
    registry.collect(client, active, k_now_ns, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch_size));
}
BENCHMARK(BM_decode_merge_with_active)->Arg(1024)->Arg(16384);

// The parts on their own, to see where the time goes.
void BM_decode_only(benchmark::State& state) {
  const auto batch_size = static_cast<size_t>(state.range(0));
  std::vector<nl_conn> batch;
  batch.reserve(batch_size);
  size_t next = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(decode_batch(next, batch_size, batch));
    next += batch_size;
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch_size));
}
BENCHMARK(BM_decode_only)->Arg(1024);

void BM_merge_only(benchmark::State& state) {
  const auto batch_size = static_cast<size_t>(state.range(0));
  // Pre-decoded batches, cycled through.
  std::vector<std::vector<nl_conn>> batches(k_pool_records / batch_size);
  for (size_t b = 0; b < batches.size(); ++b)
    decode_batch(b * batch_size, batch_size, batches[b]);
  client_registry registry{client_registry_limits{}};
  const std::string client = "bench";
  const std::vector<nl_conn> active;
  std::vector<connection_view> out;
  size_t b = 0;
  for (auto _ : state) {
    registry.add_closed(batches[b]);
    b = (b + 1) % batches.size();
    registry.collect(client, active, k_now_ns, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch_size));
}
BENCHMARK(BM_merge_only)->Arg(1024);

} // namespace

BENCHMARK_MAIN();
