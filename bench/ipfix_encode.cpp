// Throughput of the IPFIX export path on one core: flow reports become data records
// (encode_flow_report), records are packed into messages of at most the mtu, and each message
// is stamped for one collector, as the exporter does before sending. Sockets are not involved.
// Target: >= 1,000,000 records/s on one core of a slow 2-vCPU VM.
//
//   build/bench/bench_ipfix_encode            (5 rounds of ~1 s, median printed)
//   build/bench/bench_ipfix_encode 0.2 3      (seconds per round, rounds)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "actors/exporter/ipfix_encoder.hpp"
#include "actors/exporter/ipfix_layout.hpp"

namespace {

using netlens::flow_end_reason;
using netlens::flow_report;

// Distinct reports the loop cycles through: every template, with and without movement in each
// direction, comm and container ids of varied length.
constexpr size_t k_pool = 4096;

std::vector<flow_report> make_pool() {
  std::vector<flow_report> pool(k_pool);
  static const char* comms[] = {"curl", "nginx", "postgres", "java", "node-exporter-x"};
  for (size_t i = 0; i < k_pool; ++i) {
    flow_report& r = pool[i];
    bool v6 = i % 4 == 3;
    r.conn.family = v6 ? AF_INET6 : AF_INET;
    uint32_t local = htonl(0x0a000000u + static_cast<uint32_t>(i));
    uint32_t peer = htonl(0xc0000200u + static_cast<uint32_t>(i % 251));
    if (v6) {
      r.conn.saddr[0] = 0x20, r.conn.saddr[1] = 0x01, r.conn.saddr[2] = 0x0d;
      r.conn.daddr[0] = 0x20, r.conn.daddr[1] = 0x01, r.conn.daddr[2] = 0x0d;
    }
    std::memcpy(r.conn.saddr + (v6 ? 12 : 0), &local, 4);
    std::memcpy(r.conn.daddr + (v6 ? 12 : 0), &peer, 4);
    r.conn.sport = static_cast<uint16_t>(32768 + i);
    r.conn.dport = i % 3 == 0 ? 53 : 443;
    r.conn.protocol = i % 3 == 0 ? IPPROTO_UDP : IPPROTO_TCP;
    r.conn.direction = i % 5 == 0 ? NL_DIR_INCOMING : NL_DIR_OUTGOING;
    r.conn.pid = static_cast<uint32_t>(1000 + i);
    r.conn.netns = 4026531993u;
    r.conn.srtt_us = 1200;
    r.conn.rttvar_us = 300;
    r.conn.retransmits = static_cast<uint32_t>(i % 7);
    std::strncpy(r.conn.comm, comms[i % 5], sizeof r.conn.comm - 1);
    r.conn.bytes_sent = 1000 * i;
    r.conn.bytes_recv = 3000 * i;
    r.conn.packets_sent = 10 * i;
    r.conn.packets_recv = 20 * i;
    r.delta.bytes_sent = i % 6 == 1 ? 0 : 1400;
    r.delta.packets_sent = i % 6 == 1 ? 0 : 2;
    r.delta.bytes_recv = 9000;
    r.delta.packets_recv = 7;
    r.start_unix_ms = 1700000000000ull + i;
    r.end_unix_ms = r.start_unix_ms + 5000;
    r.reason = i % 8 == 0 ? flow_end_reason::end_of_flow : flow_end_reason::active_timeout;
    r.has_nat = i % 10 == 0;
    if (r.has_nat) {
      std::memcpy(r.nat.saddr + (v6 ? 12 : 0), &peer, 4);
      std::memcpy(r.nat.daddr + (v6 ? 12 : 0), &local, 4);
      r.nat.sport = r.conn.dport;
      r.nat.dport = static_cast<uint16_t>(60000 + i % 1000);
    }
    r.has_device = i % 2 == 0;
    r.device_delta = {7, 9400, 2, 1480};
    if (i % 3 != 0)
      r.container_id = std::string(64, "0123456789abcdef"[i % 16]);
  }
  return pool;
}

struct round_result {
  double records_per_s = 0;
  double bytes_per_s = 0;
  uint64_t messages = 0;
};

round_result run_round(const std::vector<flow_report>& pool, double seconds) {
  using clock = std::chrono::steady_clock;
  netlens::ipfix_settings settings; // mtu 1400
  netlens::ipfix_encoder encoder(settings);
  if (netlens::add_netlens_templates(encoder) != netlens::ipfix_status::ok) {
    std::fprintf(stderr, "templates refused\n");
    std::exit(1);
  }
  netlens::ipfix_sequence sequence;
  std::vector<netlens::ipfix_message> out;
  uint64_t records = 0, bytes = 0, messages = 0;
  auto start = clock::now();
  auto deadline = start + std::chrono::duration<double>(seconds);
  clock::time_point now;
  do {
    for (const auto& r : pool) {
      uint32_t n = 0;
      if (netlens::encode_flow_report(encoder, r, &n) != netlens::ipfix_status::ok) {
        std::fprintf(stderr, "encode failed\n");
        std::exit(1);
      }
      records += n;
    }
    encoder.flush(out);
    for (auto& m : out) {
      sequence.stamp(m, 1700000000);
      bytes += m.bytes.size();
    }
    messages += out.size();
    out.clear();
    now = clock::now();
  } while (now < deadline);
  double elapsed = std::chrono::duration<double>(now - start).count();
  return {records / elapsed, bytes / elapsed, messages};
}

} // namespace

int main(int argc, char** argv) {
  double seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
  int rounds = argc > 2 ? std::atoi(argv[2]) : 5;
  if (seconds <= 0 || rounds <= 0) {
    std::fprintf(stderr, "usage: %s [seconds per round] [rounds]\n", argv[0]);
    return 2;
  }
  auto pool = make_pool();
  std::vector<round_result> results;
  for (int i = 0; i < rounds; ++i)
    results.push_back(run_round(pool, seconds));
  std::sort(results.begin(), results.end(), [](const round_result& a, const round_result& b) {
    return a.records_per_s < b.records_per_s;
  });
  const round_result& median = results[results.size() / 2];
  std::printf("IPFIX records encoded per second on one core: %.0f records/s (median of %d "
              "rounds, min %.0f, max %.0f; target >= 1,000,000)\n",
              median.records_per_s, rounds, results.front().records_per_s,
              results.back().records_per_s);
  std::printf("IPFIX message bytes per second: %.1f MB/s (mtu %zu)\n", median.bytes_per_s / 1e6,
              netlens::ipfix_settings{}.mtu);
  return median.records_per_s >= 1e6 ? 0 : 1;
}
