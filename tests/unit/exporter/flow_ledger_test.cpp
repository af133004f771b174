// The flow ledger: every byte a connection moved reaches IPFIX exactly once, in reports at each
// active timeout and one at the end; the metrics see every poll.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>

#include "actors/exporter/flow_ledger.hpp"

using namespace netlens;

namespace {

constexpr uint64_t k_s = 1000000000ull;

connection_view view(uint64_t id, uint64_t start_ns, conn_counters delta, bool closed = false) {
  connection_view v{};
  v.conn.sock_id = id;
  v.conn.start_ns = start_ns;
  v.conn.last_ns = start_ns;
  v.conn.protocol = 6;
  v.conn.family = 2;
  v.last = delta;
  v.closed = closed;
  return v;
}

// Collects what the ledger reports, as the exporter would consume it.
struct recorder {
  std::vector<flow_report> metrics, ipfix;
  flow_ledger::sink to_metrics() {
    return [this](const flow_report& r) { metrics.push_back(r); };
  }
  flow_ledger::sink to_ipfix() {
    return [this](const flow_report& r) { ipfix.push_back(r); };
  }
};

poll_clock at(uint64_t mono_s) {
  return {mono_s * k_s, 1700000000000ull + mono_s * 1000};
}

uint64_t sum_sent(const std::vector<flow_report>& reports, uint64_t id) {
  uint64_t n = 0;
  for (const auto& r : reports)
    if (r.conn.sock_id == id)
      n += r.delta.bytes_sent;
  return n;
}

} // namespace

TEST_CASE("a connection closed before any poll is one end-of-flow report", "[flow_ledger]") {
  flow_ledger ledger(60 * k_s);
  recorder rec;
  auto& metrics = rec.metrics;
  auto& ipfix = rec.ipfix;
  ledger.poll({view(1, 1 * k_s, {100, 200, 3, 4, 0}, true)}, at(2), rec.to_metrics(),
              rec.to_ipfix());
  REQUIRE(ipfix.size() == 1);
  CHECK(ipfix[0].reason == flow_end_reason::end_of_flow);
  CHECK(ipfix[0].delta.bytes_sent == 100);
  CHECK(ipfix[0].delta.bytes_recv == 200);
  CHECK(ipfix[0].start_unix_ms == 1700000000000ull + 1000);
  REQUIRE(metrics.size() == 1);
  CHECK(metrics[0].first_report);
  CHECK(metrics[0].reason == flow_end_reason::end_of_flow);
  CHECK(ledger.stats().open == 0);
}

TEST_CASE("an idle-expired UDP flow ends as idle timeout", "[flow_ledger]") {
  flow_ledger ledger(60 * k_s);
  recorder rec;
  auto& ipfix = rec.ipfix;
  auto v = view(1, 1 * k_s, {10, 0, 1, 0, 0}, true);
  v.conn.flags = NL_FLAG_IDLE_EXPIRED;
  ledger.poll({v}, at(2), rec.to_metrics(), rec.to_ipfix());
  REQUIRE(ipfix.size() == 1);
  CHECK(ipfix[0].reason == flow_end_reason::idle_timeout);
}

TEST_CASE("active timeouts carry the deltas since the previous report, never twice",
          "[flow_ledger]") {
  flow_ledger ledger(2 * k_s);
  recorder rec;
  auto& metrics = rec.metrics;
  auto& ipfix = rec.ipfix;
  std::mt19937_64 rng(7);
  uint64_t total = 0;
  // Polls every 500 ms for 10 s, random bytes each time, then the close.
  for (int i = 1; i <= 20; ++i) {
    uint64_t d = rng() % 10000;
    total += d;
    ledger.poll({view(9, 0, {d, 0, 1, 0, 0})}, {i * k_s / 2, 1700000000000ull + i * 500u},
                rec.to_metrics(), rec.to_ipfix());
  }
  uint64_t d = rng() % 10000;
  total += d;
  ledger.poll({view(9, 0, {d, 0, 1, 0, 0}, true)}, {21 * k_s / 2, 1700000000010500ull},
              rec.to_metrics(), rec.to_ipfix());
  CHECK(sum_sent(ipfix, 9) == total);
  CHECK(sum_sent(metrics, 9) == total);
  size_t active = 0;
  for (const auto& r : ipfix)
    active += r.reason == flow_end_reason::active_timeout;
  CHECK(active == 5); // at 2, 4, 6, 8 and 10 s
  CHECK(ipfix.back().reason == flow_end_reason::end_of_flow);
  CHECK(ledger.stats().open == 0);
}

TEST_CASE("a connection that did not move gets no active-timeout record", "[flow_ledger]") {
  flow_ledger ledger(1 * k_s);
  recorder rec;
  auto& metrics = rec.metrics;
  auto& ipfix = rec.ipfix;
  ledger.poll({view(1, 0, {5, 0, 1, 0, 0})}, at(2), rec.to_metrics(), rec.to_ipfix());
  CHECK(ipfix.size() == 1);
  ledger.poll({view(1, 0, {})}, at(4), rec.to_metrics(), rec.to_ipfix());
  CHECK(ipfix.size() == 1);
  CHECK(metrics.size() == 1); // nothing moved: no metrics report either
}

TEST_CASE("forced end at shutdown reports what is pending for every open flow", "[flow_ledger]") {
  flow_ledger ledger(60 * k_s);
  recorder rec;
  auto& ipfix = rec.ipfix;
  ledger.poll({view(1, 0, {5, 6, 1, 1, 0}), view(2, 0, {})}, at(1), rec.to_metrics(),
              rec.to_ipfix());
  REQUIRE(ipfix.empty());
  ledger.force_end(at(2), rec.to_ipfix());
  REQUIRE(ipfix.size() == 2);
  for (const auto& r : ipfix)
    CHECK(r.reason == flow_end_reason::forced_end);
  CHECK(sum_sent(ipfix, 1) == 5);
  CHECK(ledger.stats().open == 0);
}

TEST_CASE("a flow that vanishes without its close is reported lost after a poll of grace",
          "[flow_ledger]") {
  flow_ledger ledger(60 * k_s);
  recorder rec;
  auto& ipfix = rec.ipfix;
  ledger.poll({view(1, 0, {5, 0, 1, 0, 0})}, at(1), rec.to_metrics(), rec.to_ipfix());
  ledger.poll({}, at(2), rec.to_metrics(), rec.to_ipfix());
  CHECK(ipfix.empty()); // may be a closed record held back while its NAT is looked up
  ledger.poll({}, at(3), rec.to_metrics(), rec.to_ipfix());
  REQUIRE(ipfix.size() == 1);
  CHECK(ipfix[0].reason == flow_end_reason::lack_of_resources);
  CHECK(ipfix[0].delta.bytes_sent == 5);
  CHECK(ledger.stats().lost_closes == 1);
}

TEST_CASE("device counts become deltas, and a count that restarts is all new", "[flow_ledger]") {
  flow_ledger ledger(1 * k_s);
  recorder rec;
  auto& ipfix = rec.ipfix;
  auto v = view(1, 0, {100, 0, 2, 0, 0});
  v.has_device = true;
  v.device = {0, 0, 2, 180};
  ledger.poll({v}, at(2), rec.to_metrics(), rec.to_ipfix());
  REQUIRE(ipfix.size() == 1);
  CHECK(ipfix[0].has_device);
  CHECK(ipfix[0].device_delta.bytes_out == 180);
  v.device = {0, 0, 3, 270};
  v.last = {50, 0, 1, 0, 0};
  ledger.poll({v}, at(4), rec.to_metrics(), rec.to_ipfix());
  REQUIRE(ipfix.size() == 2);
  CHECK(ipfix[1].device_delta.bytes_out == 90);
  v.device = {0, 0, 1, 60}; // the classifiers forgot the flow and counted it afresh
  ledger.poll({v}, at(6), rec.to_metrics(), rec.to_ipfix());
  REQUIRE(ipfix.size() == 3);
  CHECK(ipfix[2].device_delta.bytes_out == 60);
}

TEST_CASE("an answer that left closed connections for later declares nobody lost",
          "[flow_ledger]") {
  flow_ledger ledger(60 * k_s);
  recorder rec;
  ledger.poll({view(1, 0, {5, 0, 1, 0, 0})}, at(1), rec.to_metrics(), rec.to_ipfix());
  // Its close is among those the tracer keeps for the next answers.
  for (int i = 2; i < 6; ++i)
    ledger.poll({}, at(i), rec.to_metrics(), rec.to_ipfix(), false);
  CHECK(rec.ipfix.empty());
  ledger.poll({view(1, 0, {7, 0, 1, 0, 0}, true)}, at(6), rec.to_metrics(), rec.to_ipfix());
  REQUIRE(rec.ipfix.size() == 1);
  CHECK(rec.ipfix[0].reason == flow_end_reason::end_of_flow);
  CHECK(rec.ipfix[0].delta.bytes_sent == 12);
  CHECK(ledger.stats().lost_closes == 0);
}

TEST_CASE("a poll over pages reports what the same poll over the whole answer reports",
          "[flow_ledger]") {
  // Ten connections over five polls: some move, two close, one vanishes (its close dropped).
  // One ledger takes each answer whole, the other in pages of three.
  flow_ledger whole(10 * k_s), paged(10 * k_s);
  recorder w, p;
  for (uint64_t round = 1; round <= 5; ++round) {
    std::vector<connection_view> answer;
    for (uint64_t id = 1; id <= 10; ++id) {
      if (id == 4 && round >= 3)
        continue; // vanished without a close record
      bool closes = (id == 2 && round == 2) || (id == 7 && round == 4);
      if ((id == 2 && round > 2) || (id == 7 && round > 4))
        continue;
      answer.push_back(view(id, 1 * k_s, {id * round, round, 1, 1, 0}, closes));
    }
    whole.poll(answer, at(round * 6), w.to_metrics(), w.to_ipfix());
    paged.begin_poll();
    for (size_t at_ = 0; at_ < answer.size(); at_ += 3) {
      std::vector<connection_view> page(answer.begin() + at_,
                                        answer.begin() + std::min(answer.size(), at_ + 3));
      paged.poll_page(page, at(round * 6), p.to_metrics(), p.to_ipfix());
    }
    paged.end_poll(at(round * 6), p.to_ipfix(), true);
  }
  REQUIRE(p.ipfix.size() == w.ipfix.size());
  REQUIRE(p.metrics.size() == w.metrics.size());
  for (size_t i = 0; i < w.ipfix.size(); ++i) {
    CHECK(p.ipfix[i].conn.sock_id == w.ipfix[i].conn.sock_id);
    CHECK(p.ipfix[i].reason == w.ipfix[i].reason);
    CHECK(p.ipfix[i].delta.bytes_sent == w.ipfix[i].delta.bytes_sent);
  }
  for (uint64_t id = 1; id <= 10; ++id)
    CHECK(sum_sent(p.ipfix, id) == sum_sent(w.ipfix, id));
  // The vanished one was reported lost by both.
  auto lost = [](const recorder& r) {
    return std::count_if(r.ipfix.begin(), r.ipfix.end(), [](const flow_report& f) {
      return f.reason == flow_end_reason::lack_of_resources;
    });
  };
  CHECK(lost(p) == 1);
  CHECK(lost(w) == 1);
}
