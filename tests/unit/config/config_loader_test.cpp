// Tests of the netlens.toml loader: the example file, every rejected input under bad/, and the
// rendering used by the console's `config` command.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include "config/config_loader.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace Catch {
// A failed comparison then shows the whole configuration instead of `{?}`.
template <> struct StringMaker<netlens::config> {
  static std::string convert(const netlens::config& c) {
    return "\n" + netlens::render_effective_config(c, netlens::config{});
  }
};
} // namespace Catch

namespace {

namespace fs = std::filesystem;
using netlens::config;
using netlens::config_error;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    lines.push_back(line);
  return lines;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

config loaded(const std::variant<config, config_error>& result) {
  if (const auto* error = std::get_if<config_error>(&result))
    FAIL("unexpected error: " << error->message);
  return std::get<config>(result);
}

std::string rejected(const std::variant<config, config_error>& result) {
  REQUIRE(std::holds_alternative<config_error>(result));
  return std::get<config_error>(result).message;
}

// A value other than the default for every key, so a key wired to the wrong member shows up.
config every_key_changed() {
  config c;
  c.agent.log_level = c.agent.log_level == "debug" ? "warn" : "debug";
  c.agent.api_socket = c.agent.api_socket + ".other";
  c.agent.api_allowed_uid += 1000;
  c.tracer.max_tracked_connections += 1;
  c.tracer.closed_buffer = c.tracer.closed_buffer == netlens::closed_buffer_kind::ring
                               ? netlens::closed_buffer_kind::perf
                               : netlens::closed_buffer_kind::ring;
  c.tracer.ring_buffer_bytes *= 2;
  c.tracer.perf_buffer_pages *= 2;
  c.tracer.max_closed_connections_buffered += 1;
  c.tracer.client_expiry_s += 1;
  c.tracer.udp_idle_timeout_s += 1;
  c.tracer.closed_batch_size += 1;
  c.tracer.closed_flush_interval_ms += 1;
  c.compact_ticker.interval_ms += 1;
  c.compact_ticker.compact_interval_ms += 1;
  c.conntrack.enabled = !c.conntrack.enabled;
  c.conntrack.required = !c.conntrack.required;
  c.conntrack.max_entries += 1;
  c.conntrack.orphan_ttl_s += 1;
  c.conntrack.rate_limit = c.conntrack.rate_limit == -1 ? 5000 : -1;
  c.conntrack.receive_buffer_bytes += 1;
  c.conntrack.dump_timeout_ms += 1;
  c.conntrack.resync_interval_s += 1;
  c.netns.enabled = !c.netns.enabled;
  c.netns.max_namespaces += 1;
  c.netns.max_queued_devices += 1;
  c.netns.idle_flush_s += 1;
  c.netns.follow_processes = !c.netns.follow_processes;
  c.netns.tc_enabled = !c.netns.tc_enabled;
  c.netns.tc_include = {"veth", "eth"};
  c.netns.tc_exclude = {};
  c.netns.tc_max_flows += 1;
  c.netns.tc_flow_idle_s += 1;
  c.netns.tc_tcx = !c.netns.tc_tcx;
  c.netns.tc_create_clsact = !c.netns.tc_create_clsact;
  c.supervisor.restart_budget += 1;
  c.supervisor.restart_window_s += 1;
  c.supervisor.restart_backoff_ms += 1;
  c.supervisor.stop_timeout_ms += 1;
  c.supervisor.purge_timeout_ms += 1;
  c.supervisor.exit_timeout_ms += 1;
  c.tracer.mode = c.tracer.mode == netlens::tracer_mode::prebuilt ? netlens::tracer_mode::core
                                                                  : netlens::tracer_mode::prebuilt;
  c.tracer.cache_dir += "/other";
  c.offset_guesser.max_tries = c.offset_guesser.max_tries == 5 ? 2 : 5;
  c.offset_guesser.try_timeout_ms += 1;
  c.console.socket += ".other";
  c.console.allowed_uid += 1000;
  c.console.max_sessions += 1;
  c.console.max_line_bytes += 1;
  c.console.max_commands_per_s += 1;
  c.console.actor_timeout_ms += 1;
  c.console.first_command_timeout_ms += 1;
  c.metrics.port = c.metrics.port == 9464 ? 9465 : 9464;
  c.metrics.address = c.metrics.address == "::1" ? "127.0.0.1" : "::1";
  c.exporter.max_queued_records += 1;
  c.exporter.ipfix.collectors = {"192.0.2.1:4739", "[2001:db8::1]:2055", "collector.example.org:1"};
  c.exporter.ipfix.transport = c.exporter.ipfix.transport == netlens::ipfix_transport::udp
                                   ? netlens::ipfix_transport::tcp
                                   : netlens::ipfix_transport::udp;
  c.exporter.ipfix.observation_domain_id += 1;
  c.exporter.ipfix.active_timeout_s += 1;
  c.exporter.ipfix.flush_interval_ms += 1;
  c.exporter.ipfix.template_refresh_s += 1;
  c.exporter.ipfix.mtu += 1;
  c.exporter.ipfix.enterprise_number += 1;
  c.exporter.metrics.enabled = !c.exporter.metrics.enabled;
  c.exporter.metrics.labels = {"peer_port", "comm"};
  c.exporter.metrics.max_series += 1;
  c.exporter.metrics.interval_ms += 1;
  return c;
}

} // namespace

TEST_CASE("each file under bad/ is rejected with the message on its first line", "[config]") {
  const std::string prefix = "# expect: ";
  std::vector<fs::path> fixtures;
  for (const auto& entry : fs::directory_iterator(NETLENS_BAD_CONFIG_DIR))
    if (entry.path().extension() == ".toml")
      fixtures.push_back(entry.path());
  std::sort(fixtures.begin(), fixtures.end());
  // Guards against a wrong directory turning this test into a silent pass.
  REQUIRE(fixtures.size() >= 13);

  for (const auto& fixture : fixtures) {
    INFO("fixture " << fixture.string());
    const auto lines = lines_of(read_text(fixture));
    REQUIRE(!lines.empty());
    REQUIRE(starts_with(lines.front(), prefix));
    std::string expected = lines.front().substr(prefix.size());
    const auto file = expected.find("{FILE}");
    REQUIRE(file != std::string::npos);
    expected.replace(file, std::string("{FILE}").size(), fixture.string());
    CHECK(rejected(netlens::load_config_file(fixture.string())) == expected);
  }
}

TEST_CASE("the example netlens.toml holds exactly the defaults", "[config]") {
  CHECK(loaded(netlens::load_config_file(NETLENS_EXAMPLE_CONFIG)) == config{});
}

TEST_CASE("the example netlens.toml documents every key", "[config]") {
  const auto lines = lines_of(read_text(NETLENS_EXAMPLE_CONFIG));
  std::string table;
  std::multiset<std::string> keys_in_file;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (starts_with(line, "[")) {
      table = line.substr(1, line.find(']') - 1);
      continue;
    }
    const auto equals = line.find(" = ");
    if (line.empty() || starts_with(line, "#") || equals == std::string::npos)
      continue;
    const std::string path = table + "." + line.substr(0, equals);
    keys_in_file.insert(path);

    // The comment block right above the key says what it does and gives its default.
    std::string comment;
    for (std::size_t j = i; j > 0 && starts_with(lines[j - 1], "#"); --j)
      comment = lines[j - 1] + "\n" + comment;
    INFO(path << " is documented by:\n" << comment);
    CHECK(!comment.empty());
    CHECK(comment.find("Default: ") != std::string::npos);
  }

  const auto known = netlens::config_key_paths();
  CHECK(keys_in_file.size() == known.size());
  for (const auto& path : known) {
    INFO(path);
    CHECK(keys_in_file.count(path) == 1);
  }
}

TEST_CASE("a file setting every key is loaded", "[config]") {
  const std::string socket_107_bytes = "/" + std::string(106, 's');
  const std::string text = R"(
# Limits of each range, to show they are inclusive.
[agent]
log_level = "critical"
api_socket = ")" + socket_107_bytes +
                           R"("

[tracer]
max_tracked_connections = 4194304
closed_buffer = "perf"
ring_buffer_bytes = 0x4000_0000
perf_buffer_pages = 1
max_closed_connections_buffered = 16_777_216
client_expiry_s = 1
udp_idle_timeout_s = 86400

[compact_ticker]
interval_ms = 10

[supervisor]
restart_budget = 0
restart_window_s = 86400
restart_backoff_ms = 0
stop_timeout_ms = 1
purge_timeout_ms = 600000
exit_timeout_ms = 42
)";
  const config c = loaded(netlens::load_config_string(text, "full.toml"));

  CHECK(c.agent.log_level == "critical");
  CHECK(c.agent.api_socket == socket_107_bytes);
  CHECK(c.tracer.max_tracked_connections == 4194304);
  CHECK(c.tracer.closed_buffer == netlens::closed_buffer_kind::perf);
  CHECK(c.tracer.ring_buffer_bytes == (1u << 30));
  CHECK(c.tracer.perf_buffer_pages == 1);
  CHECK(c.tracer.max_closed_connections_buffered == 16777216);
  CHECK(c.tracer.client_expiry_s == 1);
  CHECK(c.tracer.udp_idle_timeout_s == 86400);
  CHECK(c.compact_ticker.interval_ms == 10);
  CHECK(c.supervisor.restart_budget == 0);
  CHECK(c.supervisor.restart_window_s == 86400);
  CHECK(c.supervisor.restart_backoff_ms == 0);
  CHECK(c.supervisor.stop_timeout_ms == 1);
  CHECK(c.supervisor.purge_timeout_ms == 600000);
  CHECK(c.supervisor.exit_timeout_ms == 42);
}

TEST_CASE("the export tables load with every key set", "[config]") {
  const std::string text = R"(
[export]
max_queued_records = 16777216

[export.ipfix]
collectors = [
  "192.0.2.1:4739",
  "[2001:db8::1]:2055",
  "collector.example.org:65535",
]
transport = "tcp"
observation_domain_id = 4294967295
active_timeout_s = 86400
flush_interval_ms = 10
template_refresh_s = 1
mtu = 262
enterprise_number = 4294967295

[export.metrics]
enabled = true
labels = ["protocol", "family", "direction", "comm", "container_id", "netns", "peer_address",
          "local_port", "peer_port"]
max_series = 1000000
interval_ms = 100
)";
  const config c = loaded(netlens::load_config_string(text, "export.toml"));

  CHECK(c.exporter.max_queued_records == 16777216);
  CHECK(c.exporter.ipfix.collectors == std::vector<std::string>{"192.0.2.1:4739",
                                                                "[2001:db8::1]:2055",
                                                                "collector.example.org:65535"});
  CHECK(c.exporter.ipfix.transport == netlens::ipfix_transport::tcp);
  CHECK(c.exporter.ipfix.observation_domain_id == 4294967295u);
  CHECK(c.exporter.ipfix.active_timeout_s == 86400);
  CHECK(c.exporter.ipfix.flush_interval_ms == 10);
  CHECK(c.exporter.ipfix.template_refresh_s == 1);
  CHECK(c.exporter.ipfix.mtu == netlens::k_ipfix_min_mtu);
  CHECK(c.exporter.ipfix.enterprise_number == 4294967295u);
  CHECK(c.exporter.metrics.enabled);
  CHECK(c.exporter.metrics.labels ==
        std::vector<std::string>(std::begin(netlens::k_traffic_metrics_labels),
                                 std::end(netlens::k_traffic_metrics_labels)));
  CHECK(c.exporter.metrics.max_series == 1000000);
  CHECK(c.exporter.metrics.interval_ms == 100);

  // Nothing outside [export] moved.
  config rest = c;
  rest.exporter = config{}.exporter;
  CHECK(rest == config{});
}

TEST_CASE("the export defaults are the documented ones", "[config]") {
  const netlens::export_config e;
  CHECK(e.max_queued_records == 65536);
  CHECK(e.ipfix.collectors.empty());
  CHECK(e.ipfix.transport == netlens::ipfix_transport::udp);
  CHECK(e.ipfix.observation_domain_id == 1);
  CHECK(e.ipfix.active_timeout_s == 60);
  CHECK(e.ipfix.flush_interval_ms == 1000);
  CHECK(e.ipfix.template_refresh_s == 600);
  CHECK(e.ipfix.mtu == 1400);
  CHECK(e.ipfix.enterprise_number == 32473);
  CHECK_FALSE(e.metrics.enabled);
  CHECK(e.metrics.labels == std::vector<std::string>{"protocol", "direction"});
  CHECK(e.metrics.max_series == 5000);
  CHECK(e.metrics.interval_ms == 5000);

  CHECK(loaded(netlens::load_config_string("[export]\n[export.ipfix]\n[export.metrics]\n",
                                           "empty_export.toml")) == config{});
  // A sub-table alone makes its parent implicitly, which is no change either.
  CHECK(loaded(netlens::load_config_string("[export.metrics]\n", "m.toml")) == config{});
}

TEST_CASE("export keys are found however TOML spells the nesting", "[config]") {
  config expected;
  expected.exporter.ipfix.mtu = 9000;
  expected.exporter.metrics.enabled = true;
  CHECK(loaded(netlens::load_config_string(
            "[export]\nipfix.mtu = 9000\nmetrics = { enabled = true }\n", "dotted.toml")) ==
        expected);
  // A quoted key with a dot in it is one name, not the nested table.
  CHECK(rejected(netlens::load_config_string("[\"export.ipfix\"]\nmtu = 9000\n", "q.toml")) ==
        "q.toml:1:2: \"export.ipfix\": unknown table");
}

TEST_CASE("every log level spdlog knows is accepted", "[config]") {
  for (const std::string level : {"trace", "debug", "info", "warn", "error", "critical", "off"}) {
    INFO(level);
    const auto c =
        loaded(netlens::load_config_string("[agent]\nlog_level = \"" + level + "\"\n", "l.toml"));
    CHECK(c.agent.log_level == level);
  }
}

TEST_CASE("missing keys and tables keep their defaults", "[config]") {
  SECTION("empty text") {
    CHECK(loaded(netlens::load_config_string("", "empty.toml")) == config{});
  }
  SECTION("comments and empty tables only") {
    CHECK(loaded(netlens::load_config_string("# nothing\n[agent]\n[tracer]\n", "e.toml")) ==
          config{});
  }
  SECTION("an empty file on disk") {
    const auto path = fs::temp_directory_path() / "netlens_unit_config_empty.toml";
    std::ofstream(path).close();
    const auto result = netlens::load_config_file(path.string());
    fs::remove(path);
    CHECK(loaded(result) == config{});
  }
  SECTION("one key set") {
    config expected;
    expected.tracer.closed_buffer = netlens::closed_buffer_kind::perf;
    CHECK(loaded(netlens::load_config_string("[tracer]\nclosed_buffer = \"perf\"\n", "p.toml")) ==
          expected);
  }
}

TEST_CASE("a file that cannot be read is reported with the system's reason", "[config]") {
  CHECK(rejected(netlens::load_config_file("/nonexistent/netlens.toml")) ==
        "/nonexistent/netlens.toml: cannot read: No such file or directory");
  const std::string directory = fs::temp_directory_path().string();
  CHECK(rejected(netlens::load_config_file(directory)) ==
        directory + ": cannot read: Is a directory");
}

TEST_CASE("errors in text are located in the given source name", "[config]") {
  CHECK(rejected(netlens::load_config_string("[tracer]\nclient_expiry_s = 0\n", "<stdin>")) ==
        "<stdin>:2:1: tracer.client_expiry_s: 0 is out of range [1, 86400]");
}

TEST_CASE("render_effective_config marks the keys left at their default", "[config]") {
  const auto paths = netlens::config_key_paths();

  SECTION("every key of a default config is marked") {
    const auto lines = lines_of(netlens::render_effective_config(config{}, config{}));
    const auto key_lines = std::count_if(lines.begin(), lines.end(), [](const std::string& l) {
      return l.find(" = ") != std::string::npos;
    });
    CHECK(key_lines == static_cast<std::ptrdiff_t>(paths.size()));
    for (const auto& line : lines) {
      INFO(line);
      if (line.find(" = ") != std::string::npos)
        CHECK(ends_with(line, " # default"));
    }
  }

  SECTION("changed keys are not marked") {
    config c;
    c.tracer.max_tracked_connections = 1024;
    c.tracer.closed_buffer = netlens::closed_buffer_kind::perf;
    const auto lines = lines_of(netlens::render_effective_config(c, config{}));
    const auto has = [&](const std::string& l) {
      return std::find(lines.begin(), lines.end(), l) != lines.end();
    };
    CHECK(has("[tracer]"));
    CHECK(has("[export]"));
    CHECK(has("[export.ipfix]"));
    CHECK(has("[export.metrics]"));
    CHECK(has("max_tracked_connections = 1024"));
    CHECK(has("closed_buffer = \"perf\""));
    CHECK(
        has("udp_idle_timeout_s = " + std::to_string(c.tracer.udp_idle_timeout_s) + " # default"));
  }

  SECTION("the rendering loads back to the same config") {
    const config c = every_key_changed();
    const std::string text = netlens::render_effective_config(c, config{});
    INFO(text);
    CHECK(text.find("# default") == std::string::npos);
    CHECK(loaded(netlens::load_config_string(text, "rendered.toml")) == c);
  }

  SECTION("strings are escaped so the output stays valid TOML") {
    config c;
    c.agent.api_socket = "/run/a \"quoted\"\\dir/x.sock";
    CHECK(loaded(netlens::load_config_string(netlens::render_effective_config(c, config{}),
                                             "escaped.toml")) == c);
  }
}

TEST_CASE("code points toml++ 3.3 has no whitespace case for are rejected cleanly", "[config]") {
  // Found by fuzz/config_fuzz: toml++ 3.3.0 (Debian 12's) reaches __builtin_unreachable() when
  // it asks whether one of these is whitespace (its blocks 0, 11 and 63 of 0x3FA code points
  // from U+00A0; upstream issues #190 and #295). The packaged library rejects them; this keeps
  // an upgraded or rebuilt toml++ honest. Each one is tried where a value ends, where a key
  // starts, and after a line-ending backslash in a multi-line string.
  const auto utf8 = [](char32_t c) {
    std::string s;
    if (c < 0x800) {
      s += static_cast<char>(0xC0 | (c >> 6));
    } else {
      s += static_cast<char>(0xE0 | (c >> 12));
      s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    }
    s += static_cast<char>(0x80 | (c & 0x3F));
    return s;
  };
  int tried = 0;
  std::vector<std::string> accepted;
  for (char32_t c = 0xA1; c < 0xFEFF; ++c) {
    const auto block = (c - 0xA0) / 0x3FA;
    if (c == 0x3000 || (block != 0 && block != 11 && block != 63))
      continue;
    const std::string u = utf8(c);
    for (const std::string& text : {"[tracer]\nmax_tracked_connections = 65536" + u + "\n",
                                    "[tracer]\n" + u + "max_tracked_connections = 65536\n",
                                    "[agent]\napi_socket = \"\"\"\\\n" + u + "\"\"\"\n"}) {
      ++tried;
      if (std::holds_alternative<config>(netlens::load_config_string(text, "unicode.toml")))
        accepted.push_back(text);
    }
  }
  CHECK(tried == 3 * 3019); // 3,019 code points: U+00A1..0499, 2C5E..2FFF, 3001..3057, FB26..FEFE
  CHECK(accepted.empty());
  if (!accepted.empty())
    FAIL_CHECK("accepted: " << accepted.front());
}
