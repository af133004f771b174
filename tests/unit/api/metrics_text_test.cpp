// The Prometheus text rendering of agent_stats: names, kinds, units, escaping, and a grammar
// check of the whole page (promtool checks the real agent's page in e2e_metrics).
#include <catch2/catch.hpp>

#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "actors/api/metrics_text.hpp"

using namespace netlens;

namespace {

struct parsed_page {
  std::map<std::string, std::string> type; // family -> counter | gauge
  std::map<std::string, std::string> help;
  std::map<std::string, std::string> samples; // "name{labels}" -> value
  std::vector<std::string> sample_order;      // family of each sample, in page order
  std::vector<std::string> errors;
};

// Enough of the 0.0.4 grammar to catch what Prometheus would reject: HELP and TYPE once per
// family and before its samples, valid names, quoted and escaped label values, samples of one
// family together.
parsed_page parse(const std::string& page) {
  static const std::regex help_re(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*))");
  static const std::regex type_re(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge))");
  static const std::regex sample_re(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? )"
      R"(([-+]?(?:[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?|NaN|Inf)))");
  parsed_page p;
  std::istringstream in(page);
  std::string line;
  std::set<std::string> finished;
  std::string current;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, help_re)) {
      if (!p.help.emplace(m[1], m[2]).second)
        p.errors.push_back("second HELP for " + m[1].str());
    } else if (std::regex_match(line, m, type_re)) {
      if (!p.type.emplace(m[1], m[2]).second)
        p.errors.push_back("second TYPE for " + m[1].str());
      if (!p.help.count(m[1]))
        p.errors.push_back("TYPE before HELP for " + m[1].str());
    } else if (line.rfind("#", 0) == 0) {
      continue;
    } else if (std::regex_match(line, m, sample_re)) {
      std::string name = m[1];
      if (!p.type.count(name))
        p.errors.push_back("sample before TYPE: " + line);
      if (name != current) {
        if (finished.count(name))
          p.errors.push_back("samples of " + name + " not together");
        if (!current.empty())
          finished.insert(current);
        current = name;
      }
      if (!p.samples.emplace(name + m[2].str(), m[3]).second)
        p.errors.push_back("duplicate sample " + line);
      p.sample_order.push_back(name);
    } else {
      p.errors.push_back("not in the text format: " + line);
    }
  }
  return p;
}

actor_stats actor(std::string name, actor_state state, counter_list counters) {
  actor_stats a;
  a.name = std::move(name);
  a.state = state;
  a.messages_handled = 42;
  a.restarts = 1;
  a.counters = std::move(counters);
  a.uptime_ms = 1500;
  a.mailbox_size = 3;
  a.messages_per_s = 2.5;
  return a;
}

} // namespace

TEST_CASE("figures are counters unless their name says they are a level", "[api][metrics]") {
  struct expect {
    const char* figure;
    const char* name;
    metric_kind kind;
  };
  const expect cases[] = {
      {"records_lost", "netlens_perf_consumer_records_lost_total", metric_kind::counter},
      {"requests", "netlens_perf_consumer_requests_total", metric_kind::counter},
      {"events_total", "netlens_perf_consumer_events_total", metric_kind::counter},
      {"orphans_expired", "netlens_perf_consumer_orphans_expired_total", metric_kind::counter},
      {"map_entries", "netlens_perf_consumer_map_entries", metric_kind::gauge},
      {"dump_only_entries", "netlens_perf_consumer_dump_only_entries", metric_kind::gauge},
      {"capacity", "netlens_perf_consumer_capacity", metric_kind::gauge},
      {"closed_buffered", "netlens_perf_consumer_closed_buffered", metric_kind::gauge},
      {"clients", "netlens_perf_consumer_clients", metric_kind::gauge},
      {"memory_bytes", "netlens_perf_consumer_memory_bytes", metric_kind::gauge},
      {"sampling_percent", "netlens_perf_consumer_sampling_percent", metric_kind::gauge},
      {"records_per_wakeup", "netlens_perf_consumer_records_per_wakeup", metric_kind::gauge},
      {"degraded", "netlens_perf_consumer_degraded", metric_kind::gauge},
      {"events_per_s", "netlens_perf_consumer_events_per_second", metric_kind::gauge},
      {"interval_ms", "netlens_perf_consumer_interval_seconds", metric_kind::gauge},
      {"ttl_s", "netlens_perf_consumer_ttl_seconds", metric_kind::gauge},
      {"wakeups", "netlens_perf_consumer_wakeups_total", metric_kind::counter},
      {"sessions_open", "netlens_perf_consumer_sessions_open", metric_kind::gauge},
      {"sessions_total", "netlens_perf_consumer_sessions_total", metric_kind::counter},
      {"last_tries", "netlens_perf_consumer_last_tries", metric_kind::gauge},
      {"last_duration_us", "netlens_perf_consumer_last_duration_seconds", metric_kind::gauge},
      {"have_answer", "netlens_perf_consumer_have_answer", metric_kind::gauge},
      {"is_ready", "netlens_perf_consumer_is_ready", metric_kind::gauge},
      // A bare first word is a name, not a prefix: "last" alone counts something.
      {"last", "netlens_perf_consumer_last_total", metric_kind::counter},
      {"lasting_effects", "netlens_perf_consumer_lasting_effects_total", metric_kind::counter},
  };
  for (const auto& c : cases) {
    INFO(c.figure);
    auto m = describe_figure("perf_consumer", c.figure);
    CHECK(m.name == c.name);
    CHECK(m.kind == c.kind);
  }
  CHECK(describe_figure("x", "interval_ms").scale_decimals == 3);
  CHECK(describe_figure("x", "wait_us").scale_decimals == 6);
  CHECK(describe_figure("x", "wait_ns").scale_decimals == 9);
  CHECK(describe_figure("x", "ttl_s").scale_decimals == 0);
}

TEST_CASE("any text becomes a valid metric name", "[api][metrics]") {
  CHECK(sanitize_metric_name("records_lost") == "records_lost");
  CHECK(sanitize_metric_name("a.b-c d") == "a_b_c_d");
  CHECK(sanitize_metric_name("rule:level") == "rule_level");
  CHECK(sanitize_metric_name("9lives") == "_9lives");
  CHECK(sanitize_metric_name("") == "_");
  CHECK(sanitize_metric_name("caf\xc3\xa9") == "caf__");
  CHECK(describe_figure("perf consumer", "lost.records").name ==
        "netlens_perf_consumer_lost_records_total");
}

TEST_CASE("label values and help text are escaped", "[api][metrics]") {
  CHECK(escape_label_value(R"(a"b\c)") == R"(a\"b\\c)");
  CHECK(escape_label_value("two\nlines") == R"(two\nlines)");
  CHECK(escape_help("back\\slash \"quoted\"\nnext") == R"(back\\slash "quoted"\nnext)");
}

TEST_CASE("every figure of every actor is on the page, once, with HELP and TYPE",
          "[api][metrics]") {
  agent_stats stats;
  stats.actors.push_back(actor("supervisor", actor_state::running, {}));
  stats.actors.push_back(actor("tracer", actor_state::running,
                               {{"map_entries", 17},
                                {"kernel_closed_lost", 0},
                                {"closed_received", 18446744073709551615ull}}));
  stats.actors.push_back(actor("compact_ticker", actor_state::running,
                               {{"ticks", 9}, {"interval_ms", 1500}, {"wait_us", 7}}));
  stats.actors.push_back(
      actor("conntrack", actor_state::degraded, {{"degraded", 1}, {"entries", 0}}));
  stats.actors.back().last_error = "no CAP_NET_ADMIN";
  stats.actors[1].info = {{"mode", "core"}, {"skipped_runtime", "clang: \"not found\"\n"}};
  auto gone = actor("api", actor_state::unresponsive, {});
  gone.answered = false;
  gone.mailbox_size = -1;
  stats.actors.push_back(gone);

  const std::string page = render_metrics(stats);
  INFO(page);
  auto p = parse(page);
  CHECK(p.errors.empty());
  for (const auto& e : p.errors)
    UNSCOPED_INFO(e);

  CHECK(p.samples.at(R"(netlens_tracer_map_entries{actor="tracer"})") == "17");
  CHECK(p.type.at("netlens_tracer_map_entries") == "gauge");
  CHECK(p.samples.at(R"(netlens_tracer_kernel_closed_lost_total{actor="tracer"})") == "0");
  CHECK(p.type.at("netlens_tracer_kernel_closed_lost_total") == "counter");
  // uint64 values are written exactly, not through a double.
  CHECK(p.samples.at(R"(netlens_tracer_closed_received_total{actor="tracer"})") ==
        "18446744073709551615");
  CHECK(p.samples.at(R"(netlens_compact_ticker_ticks_total{actor="compact_ticker"})") == "9");
  CHECK(p.samples.at(R"(netlens_compact_ticker_interval_seconds{actor="compact_ticker"})") ==
        "1.5");
  CHECK(p.samples.at(R"(netlens_compact_ticker_wait_seconds{actor="compact_ticker"})") ==
        "0.000007");
  CHECK(p.help.at("netlens_compact_ticker_interval_seconds") ==
        "Interval between idle-expiry ticks");
  // A figure with no description still says where it comes from.
  CHECK(p.help.at("netlens_compact_ticker_wait_seconds") ==
        R"(Figure "wait_us" of the compact_ticker actor)");
  CHECK(p.samples.at(R"(netlens_conntrack_degraded{actor="conntrack"})") == "1");

  // The per-actor families have one sample for each actor, the supervisor included.
  for (const char* family :
       {"netlens_actor_up", "netlens_actor_messages_handled_total", "netlens_actor_restarts_total",
        "netlens_actor_uptime_seconds", "netlens_actor_last_error_present"}) {
    INFO(family);
    CHECK(std::count(p.sample_order.begin(), p.sample_order.end(), family) == 5);
  }
  CHECK(p.samples.at(R"(netlens_actor_up{actor="tracer"})") == "1");
  CHECK(p.samples.at(R"(netlens_actor_up{actor="api"})") == "0");
  CHECK(p.samples.at(R"(netlens_actor_state{actor="conntrack",state="degraded"})") == "1");
  CHECK(p.samples.at(R"(netlens_actor_last_error_present{actor="conntrack"})") == "1");
  CHECK(p.samples.at(R"(netlens_actor_last_error_present{actor="tracer"})") == "0");
  CHECK(p.samples.at(R"(netlens_actor_messages_handled_total{actor="tracer"})") == "42");
  CHECK(p.samples.at(R"(netlens_actor_restarts_total{actor="tracer"})") == "1");
  CHECK(p.samples.at(R"(netlens_actor_uptime_seconds{actor="tracer"})") == "1.5");
  CHECK(p.samples.at(R"(netlens_actor_messages_per_second{actor="tracer"})") == "2.5");
  CHECK(p.samples.at(R"(netlens_actor_mailbox_messages{actor="tracer"})") == "3");
  CHECK(p.type.at("netlens_actor_info") == "gauge");
  CHECK(p.samples.at(R"(netlens_actor_info{actor="tracer",name="mode",value="core"})") == "1");
  CHECK(
      p.samples.at(
          R"(netlens_actor_info{actor="tracer",name="skipped_runtime",value="clang: \"not found\"\n"})") ==
      "1");
  CHECK(std::count(p.sample_order.begin(), p.sample_order.end(), "netlens_actor_info") == 2);
  // The unanswered actor's mailbox is unknown: no sample rather than a zero.
  CHECK(p.samples.count(R"(netlens_actor_mailbox_messages{actor="api"})") == 0);

  // Every counter ends in _total and no gauge does (promtool's rule).
  for (const auto& [name, type] : p.type) {
    INFO(name);
    bool total = name.size() > 6 && name.substr(name.size() - 6) == "_total";
    CHECK(total == (type == "counter"));
  }
}

TEST_CASE("odd actor names and colliding figures still give a valid page", "[api][metrics]") {
  agent_stats stats;
  stats.actors.push_back(
      actor("we\"ird\\one\n", actor_state::running, {{"a.b", 1}, {"a_b", 2}, {"x", 3}, {"x", 4}}));
  const std::string page = render_metrics(stats);
  INFO(page);
  auto p = parse(page);
  CHECK(p.errors.empty());
  for (const auto& e : p.errors)
    UNSCOPED_INFO(e);
  // The label keeps the real name, escaped; the metric name is sanitised.
  CHECK(p.samples.at(R"(netlens_we_ird_one__a_b_total{actor="we\"ird\\one\n"})") == "1");
  CHECK(p.samples.at(R"(netlens_we_ird_one__x_total{actor="we\"ird\\one\n"})") == "3");
  CHECK(page.find("# netlens: a second sample for netlens_we_ird_one__a_b_total was dropped") !=
        std::string::npos);
  CHECK(page.find("# netlens: a second sample for netlens_we_ird_one__x_total was dropped") !=
        std::string::npos);
}

TEST_CASE("a figure that lands on a per-actor family is not emitted twice", "[api][metrics]") {
  agent_stats stats;
  // The figure "up" of an actor named "actor" is named netlens_actor_up{actor="actor"}, the
  // sample the per-actor family already has: the family's own sample stays.
  stats.actors.push_back(actor("actor", actor_state::running, {{"up", 5}}));
  const std::string page = render_metrics(stats);
  auto p = parse(page);
  CHECK(p.errors.empty());
  CHECK(p.samples.at(R"(netlens_actor_up{actor="actor"})") == "1");
  CHECK(page.find("# netlens: a second sample for netlens_actor_up was dropped") !=
        std::string::npos);
}
