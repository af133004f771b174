#include "config/config_loader.hpp"

#include "config/collector_address.hpp"

#include <toml++/toml.h>

#include <arpa/inet.h>
#include <climits>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <memory>
#include <optional>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>

namespace netlens {
namespace {

// What a key accepts. Defaults are deliberately absent: they live only in config.hpp.
struct count_rule {
  uint32_t min;
  uint32_t max;
  bool power_of_two = false;
};
struct log_level_rule {};
struct socket_path_rule {};
// A string naming one enumerator of E (the names are enum_names<E>::table below).
template <typename E> struct enum_rule {};
struct directory_path_rule {};
struct ip_address_rule {};
struct bool_rule {};
// Network device name prefixes: each non-empty, shorter than IFNAMSIZ, no '/', ':' or space
// (what the kernel refuses in a device name), at most k_max_prefixes of them.
struct device_prefixes_rule {};
constexpr std::size_t k_max_prefixes = 64;
constexpr std::size_t k_ifnamsiz = 16;
// IPFIX collectors, "host:port" each (parse_collector_address), distinct, at most
// k_max_collectors of them.
struct collectors_rule {};
constexpr std::size_t k_max_collectors = 16;
// A count whose lower bound is k_ipfix_min_mtu; below it the message says why.
struct ipfix_mtu_rule {};
// Distinct names from k_traffic_metrics_labels.
struct traffic_labels_rule {};
// -1 (off) or a positive count.
struct limit_rule {
  int64_t min;
  int64_t max;
};

// spdlog's level names, which is what the agent hands the value to.
constexpr std::string_view k_log_levels[] = {"trace", "debug",    "info", "warn",
                                             "error", "critical", "off"};

// How each enumerator of a configuration enum is written in the file.
template <typename E> struct enum_name {
  std::string_view name;
  E value;
};
template <typename E> struct enum_names;
template <> struct enum_names<closed_buffer_kind> {
  static constexpr enum_name<closed_buffer_kind> table[] = {{"ring", closed_buffer_kind::ring},
                                                            {"perf", closed_buffer_kind::perf}};
};
template <> struct enum_names<tracer_mode> {
  static constexpr enum_name<tracer_mode> table[] = {{"auto", tracer_mode::auto_select},
                                                     {"core", tracer_mode::core},
                                                     {"runtime", tracer_mode::runtime},
                                                     {"prebuilt", tracer_mode::prebuilt}};
};
template <> struct enum_names<ipfix_transport> {
  static constexpr enum_name<ipfix_transport> table[] = {{"udp", ipfix_transport::udp},
                                                         {"tcp", ipfix_transport::tcp}};
};

// sizeof(sockaddr_un::sun_path) on Linux; the path needs room for its terminating NUL.
constexpr std::size_t k_sun_path_size = 108;

constexpr uint32_t k_gib = 1u << 30;

// The one list of keys, in the order netlens.toml documents them. Loading, rendering and
// config_key_paths all walk it, so a key added here is handled everywhere at once.
template <typename Config, typename Visit> void for_each_key(Config& c, Visit&& visit) {
  static_assert(std::is_same_v<std::remove_const_t<Config>, config>);
  visit("agent", "log_level", c.agent.log_level, log_level_rule{});
  visit("agent", "api_socket", c.agent.api_socket, socket_path_rule{});
  visit("agent", "api_allowed_uid", c.agent.api_allowed_uid, count_rule{0, 4294967294u});

  visit("tracer", "max_tracked_connections", c.tracer.max_tracked_connections,
        count_rule{1024, 4194304});
  visit("tracer", "closed_buffer", c.tracer.closed_buffer, enum_rule<closed_buffer_kind>{});
  visit("tracer", "ring_buffer_bytes", c.tracer.ring_buffer_bytes, count_rule{4096, k_gib, true});
  visit("tracer", "perf_buffer_pages", c.tracer.perf_buffer_pages, count_rule{1, 4096, true});
  visit("tracer", "max_closed_connections_buffered", c.tracer.max_closed_connections_buffered,
        count_rule{1, 16777216});
  visit("tracer", "client_expiry_s", c.tracer.client_expiry_s, count_rule{1, 86400});
  visit("tracer", "udp_idle_timeout_s", c.tracer.udp_idle_timeout_s, count_rule{1, 86400});
  visit("tracer", "closed_batch_size", c.tracer.closed_batch_size, count_rule{1, 64});
  visit("tracer", "closed_flush_interval_ms", c.tracer.closed_flush_interval_ms,
        count_rule{1, 10000});
  visit("tracer", "mode", c.tracer.mode, enum_rule<tracer_mode>{});
  visit("tracer", "cache_dir", c.tracer.cache_dir, directory_path_rule{});

  visit("compact_ticker", "interval_ms", c.compact_ticker.interval_ms, count_rule{10, 3600000});
  visit("compact_ticker", "compact_interval_ms", c.compact_ticker.compact_interval_ms,
        count_rule{10, 3600000});

  visit("conntrack", "enabled", c.conntrack.enabled, bool_rule{});
  visit("conntrack", "required", c.conntrack.required, bool_rule{});
  visit("conntrack", "max_entries", c.conntrack.max_entries, count_rule{1024, 16777216});
  visit("conntrack", "orphan_ttl_s", c.conntrack.orphan_ttl_s, count_rule{1, 86400});
  visit("conntrack", "rate_limit", c.conntrack.rate_limit, limit_rule{1, 100000000});
  visit("conntrack", "receive_buffer_bytes", c.conntrack.receive_buffer_bytes,
        count_rule{65536, k_gib});
  visit("conntrack", "dump_timeout_ms", c.conntrack.dump_timeout_ms, count_rule{100, 600000});
  visit("conntrack", "resync_interval_s", c.conntrack.resync_interval_s, count_rule{1, 86400});

  visit("netns", "enabled", c.netns.enabled, bool_rule{});
  visit("netns", "max_namespaces", c.netns.max_namespaces, count_rule{1, 1048576});
  visit("netns", "max_queued_devices", c.netns.max_queued_devices, count_rule{1, 65536});
  visit("netns", "idle_flush_s", c.netns.idle_flush_s, count_rule{1, 86400});
  visit("netns", "follow_processes", c.netns.follow_processes, bool_rule{});
  visit("netns", "tc_enabled", c.netns.tc_enabled, bool_rule{});
  visit("netns", "tc_include", c.netns.tc_include, device_prefixes_rule{});
  visit("netns", "tc_exclude", c.netns.tc_exclude, device_prefixes_rule{});
  visit("netns", "tc_max_flows", c.netns.tc_max_flows, count_rule{1024, 4194304});
  visit("netns", "tc_flow_idle_s", c.netns.tc_flow_idle_s, count_rule{1, 86400});
  visit("netns", "tc_tcx", c.netns.tc_tcx, bool_rule{});
  visit("netns", "tc_create_clsact", c.netns.tc_create_clsact, bool_rule{});

  visit("supervisor", "restart_budget", c.supervisor.restart_budget, count_rule{0, 100});
  visit("supervisor", "restart_window_s", c.supervisor.restart_window_s, count_rule{1, 86400});
  visit("supervisor", "restart_backoff_ms", c.supervisor.restart_backoff_ms, count_rule{0, 60000});
  visit("supervisor", "stop_timeout_ms", c.supervisor.stop_timeout_ms, count_rule{1, 600000});
  visit("supervisor", "purge_timeout_ms", c.supervisor.purge_timeout_ms, count_rule{1, 600000});
  visit("supervisor", "exit_timeout_ms", c.supervisor.exit_timeout_ms, count_rule{1, 600000});

  visit("offset_guesser", "max_tries", c.offset_guesser.max_tries, count_rule{1, 5});
  visit("offset_guesser", "try_timeout_ms", c.offset_guesser.try_timeout_ms, count_rule{10, 60000});

  visit("console", "socket", c.console.socket, socket_path_rule{});
  visit("console", "allowed_uid", c.console.allowed_uid, count_rule{0, 4294967294u});
  visit("console", "max_sessions", c.console.max_sessions, count_rule{1, 64});
  visit("console", "max_line_bytes", c.console.max_line_bytes, count_rule{64, 65536});
  visit("console", "max_commands_per_s", c.console.max_commands_per_s, count_rule{1, 1000});
  visit("console", "actor_timeout_ms", c.console.actor_timeout_ms, count_rule{1, 10000});
  visit("console", "first_command_timeout_ms", c.console.first_command_timeout_ms,
        count_rule{100, 600000});

  visit("metrics", "port", c.metrics.port, count_rule{0, 65535});
  visit("metrics", "address", c.metrics.address, ip_address_rule{});

  visit("export", "max_queued_records", c.exporter.max_queued_records, count_rule{1, 16777216});

  visit("export.ipfix", "collectors", c.exporter.ipfix.collectors, collectors_rule{});
  visit("export.ipfix", "transport", c.exporter.ipfix.transport, enum_rule<ipfix_transport>{});
  visit("export.ipfix", "observation_domain_id", c.exporter.ipfix.observation_domain_id,
        count_rule{0, 4294967295u});
  visit("export.ipfix", "active_timeout_s", c.exporter.ipfix.active_timeout_s,
        count_rule{1, 86400});
  visit("export.ipfix", "flush_interval_ms", c.exporter.ipfix.flush_interval_ms,
        count_rule{10, 60000});
  visit("export.ipfix", "template_refresh_s", c.exporter.ipfix.template_refresh_s,
        count_rule{1, 86400});
  visit("export.ipfix", "mtu", c.exporter.ipfix.mtu, ipfix_mtu_rule{});
  visit("export.ipfix", "enterprise_number", c.exporter.ipfix.enterprise_number,
        count_rule{1, 4294967295u});

  visit("export.metrics", "enabled", c.exporter.metrics.enabled, bool_rule{});
  visit("export.metrics", "labels", c.exporter.metrics.labels, traffic_labels_rule{});
  visit("export.metrics", "max_series", c.exporter.metrics.max_series, count_rule{1, 1000000});
  visit("export.metrics", "interval_ms", c.exporter.metrics.interval_ms, count_rule{100, 600000});
}

// Adding a member to config.hpp makes one of these bindings fail to compile: the reminder that
// the new member needs a line in for_each_key (and in netlens.toml), or it could never be set.
[[maybe_unused]] void for_each_key_covers_every_member(const config& c) {
  [[maybe_unused]] const auto& [agent, tracer, compact_ticker, conntrack, netns, supervisor,
                                offset_guesser, console, metrics, exporter] = c;
  [[maybe_unused]] const auto& [a0, a1, a2] = agent;
  [[maybe_unused]] const auto& [t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10] = tracer;
  [[maybe_unused]] const auto& [c0, c1] = compact_ticker;
  [[maybe_unused]] const auto& [n0, n1, n2, n3, n4, n5, n6, n7] = conntrack;
  [[maybe_unused]] const auto& [e0, e1, e2, e3, e4, e5, e6, e7, e8, e9, e10, e11] = netns;
  [[maybe_unused]] const auto& [s0, s1, s2, s3, s4, s5] = supervisor;
  [[maybe_unused]] const auto& [g0, g1] = offset_guesser;
  [[maybe_unused]] const auto& [k0, k1, k2, k3, k4, k5, k6] = console;
  [[maybe_unused]] const auto& [m0, m1] = metrics;
  [[maybe_unused]] const auto& [x0, ipfix, traffic_metrics] = exporter;
  [[maybe_unused]] const auto& [i0, i1, i2, i3, i4, i5, i6, i7] = ipfix;
  [[maybe_unused]] const auto& [r0, r1, r2, r3] = traffic_metrics;
}

struct key_name {
  std::string_view table;
  std::string_view key;
};

std::vector<key_name> known_keys() {
  std::vector<key_name> keys;
  config scratch;
  for_each_key(scratch, [&](std::string_view table, std::string_view key, auto&, const auto&) {
    keys.push_back({table, key});
  });
  return keys;
}

// Every table the keys live in, with the tables that hold them ("export" for "export.ipfix").
std::vector<std::string_view> known_tables(const std::vector<key_name>& keys) {
  std::vector<std::string_view> tables;
  for (const auto& k : keys) {
    for (std::size_t dot = k.table.find('.'); dot != std::string_view::npos;
         dot = k.table.find('.', dot + 1))
      if (std::find(tables.begin(), tables.end(), k.table.substr(0, dot)) == tables.end())
        tables.push_back(k.table.substr(0, dot));
    if (std::find(tables.begin(), tables.end(), k.table) == tables.end())
      tables.push_back(k.table);
  }
  return tables;
}

// The name of table `name` inside `parent` ("" for the top level): "export.ipfix" for
// ("export", "ipfix").
std::string child_table(std::string_view parent, std::string_view name) {
  return parent.empty() ? std::string(name) : std::string(parent) + "." + std::string(name);
}

// The last part of a table's name, and the table it sits in ("" for the top level).
std::string_view leaf_of(std::string_view table) {
  const auto dot = table.rfind('.');
  return dot == std::string_view::npos ? table : table.substr(dot + 1);
}
std::string_view parent_of(std::string_view table) {
  const auto dot = table.rfind('.');
  return dot == std::string_view::npos ? std::string_view() : table.substr(0, dot);
}

// The table named by a dotted path of bare keys, or null when the file does not have it.
const toml::table* find_table(const toml::table& root, std::string_view path) {
  const toml::table* t = &root;
  while (t && !path.empty()) {
    const auto dot = path.find('.');
    t = t->get_as<toml::table>(path.substr(0, dot));
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
  }
  return t;
}

// TOML basic-string quoting. Control characters are escaped so a value can neither break the
// one-line error message nor the rendered TOML.
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    switch (ch) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\b':
      out += "\\b";
      break;
    case '\t':
      out += "\\t";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\f':
      out += "\\f";
      break;
    case '\r':
      out += "\\r";
      break;
    default:
      if (ch < 0x20 || ch == 0x7f) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04X", ch);
        out += buf;
      } else {
        out += static_cast<char>(ch);
      }
    }
  }
  out += '"';
  return out;
}

// A user's value echoed in a message is cut short so a pasted blob cannot flood the log line.
std::string quoted_for_message(std::string_view s) {
  constexpr std::size_t k_max = 64;
  if (s.size() <= k_max)
    return quoted(s);
  std::size_t cut = k_max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80)
    --cut; // never split a UTF-8 sequence
  return quoted(s.substr(0, cut)) + "...";
}

bool is_bare_key(std::string_view k) {
  return !k.empty() && std::all_of(k.begin(), k.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-';
  });
}

// Key paths in messages are written the way TOML would accept them, so `"a.b"` and `a.b` differ.
std::string key_path(std::string_view parent, std::string_view key) {
  std::string k = is_bare_key(key) ? std::string(key) : quoted_for_message(key);
  return parent.empty() ? k : std::string(parent) + "." + k;
}

std::string_view type_name(toml::node_type t) {
  switch (t) {
  case toml::node_type::table:
    return "table";
  case toml::node_type::array:
    return "array";
  case toml::node_type::string:
    return "string";
  case toml::node_type::integer:
    return "integer";
  case toml::node_type::floating_point:
    return "float";
  case toml::node_type::boolean:
    return "boolean";
  case toml::node_type::date:
    return "date";
  case toml::node_type::time:
    return "time";
  case toml::node_type::date_time:
    return "date-time";
  case toml::node_type::none:
    break;
  }
  return "nothing";
}

std::string wrong_type(std::string_view expected, const toml::node& n) {
  return "expected " + std::string(expected) + ", got " + std::string(type_name(n.type()));
}

std::string range_text(uint32_t min, uint32_t max) {
  return "[" + std::to_string(min) + ", " + std::to_string(max) + "]";
}

// The allowed values, quoted as they would be written in the file.
std::string quoted_list(const std::string_view* first, const std::string_view* last) {
  std::string out;
  for (auto it = first; it != last; ++it) {
    if (it != first)
      out += ", ";
    out += quoted(*it);
  }
  return out;
}

bool is_power_of_two(uint64_t v) {
  return v != 0 && (v & (v - 1)) == 0;
}

// Each check returns what is wrong with the node, or nothing after storing the value.
using problem = std::optional<std::string>;

problem apply(const toml::node& n, uint32_t& field, const count_rule& rule) {
  const auto* v = n.as_integer();
  if (!v)
    return wrong_type("integer", n);
  const int64_t value = v->get();
  if (value < 0)
    return std::to_string(value) + " is negative; must be in " + range_text(rule.min, rule.max);
  if (value < rule.min || value > rule.max)
    return std::to_string(value) + " is out of range " + range_text(rule.min, rule.max);
  const auto u = static_cast<uint64_t>(value);
  if (rule.power_of_two && !is_power_of_two(u)) {
    // The bounds are powers of two themselves, so both neighbours are valid values.
    uint64_t below = 1;
    while (below * 2 < u)
      below *= 2;
    return std::to_string(value) + " is not a power of two (nearest are " + std::to_string(below) +
           " and " + std::to_string(below * 2) + ")";
  }
  field = static_cast<uint32_t>(u);
  return std::nullopt;
}

problem apply(const toml::node& n, bool& field, const bool_rule&) {
  const auto* v = n.as_boolean();
  if (!v)
    return wrong_type("boolean (true or false)", n);
  field = v->get();
  return std::nullopt;
}

problem apply(const toml::node& n, int64_t& field, const limit_rule& rule) {
  const auto* v = n.as_integer();
  if (!v)
    return wrong_type("integer", n);
  const int64_t value = v->get();
  if (value != -1 && (value < rule.min || value > rule.max))
    return std::to_string(value) + " is out of range; must be -1 (no limit) or in [" +
           std::to_string(rule.min) + ", " + std::to_string(rule.max) + "]";
  field = value;
  return std::nullopt;
}

problem apply(const toml::node& n, std::string& field, const log_level_rule&) {
  const auto* v = n.as_string();
  if (!v)
    return wrong_type("string", n);
  const std::string& s = v->get();
  if (std::find(std::begin(k_log_levels), std::end(k_log_levels), s) == std::end(k_log_levels))
    return quoted_for_message(s) + " is not one of " +
           quoted_list(std::begin(k_log_levels), std::end(k_log_levels));
  field = s;
  return std::nullopt;
}

// An absolute path shorter than max_size bytes (limit names that bound in the message).
problem apply_absolute_path(const toml::node& n, std::string& field, std::size_t max_size,
                            const std::string& limit) {
  const auto* v = n.as_string();
  if (!v)
    return wrong_type("string", n);
  const std::string& s = v->get();
  if (s.find('\0') != std::string::npos)
    return std::string("path contains a NUL byte");
  if (s.empty() || s.front() != '/')
    return quoted_for_message(s) + " is not an absolute path";
  if (s.size() >= max_size)
    return "path is " + std::to_string(s.size()) + " bytes; must be shorter than " + limit;
  field = s;
  return std::nullopt;
}

problem apply(const toml::node& n, std::string& field, const socket_path_rule&) {
  return apply_absolute_path(n, field, k_sun_path_size,
                             std::to_string(k_sun_path_size) + " (sun_path)");
}

template <typename E> problem apply(const toml::node& n, E& field, const enum_rule<E>&) {
  const auto* v = n.as_string();
  if (!v)
    return wrong_type("string", n);
  const auto& table = enum_names<E>::table;
  for (const auto& e : table) {
    if (e.name == v->get()) {
      field = e.value;
      return std::nullopt;
    }
  }
  std::string_view names[std::size(table)];
  std::transform(std::begin(table), std::end(table), names,
                 [](const enum_name<E>& e) { return e.name; });
  return quoted_for_message(v->get()) + " is not one of " +
         quoted_list(std::begin(names), std::end(names));
}

problem apply(const toml::node& n, std::string& field, const directory_path_rule&) {
  return apply_absolute_path(n, field, PATH_MAX, std::to_string(PATH_MAX));
}

problem apply(const toml::node& n, std::string& field, const ip_address_rule&) {
  const auto* v = n.as_string();
  if (!v)
    return wrong_type("string", n);
  const std::string& s = v->get();
  unsigned char buf[sizeof(in6_addr)];
  if (s.find('\0') != std::string::npos ||
      (inet_pton(AF_INET, s.c_str(), buf) != 1 && inet_pton(AF_INET6, s.c_str(), buf) != 1))
    return quoted_for_message(s) + " is not an IPv4 or IPv6 address";
  field = s;
  return std::nullopt;
}

problem apply(const toml::node& n, std::vector<std::string>& field, const device_prefixes_rule&) {
  const auto* arr = n.as_array();
  if (!arr)
    return wrong_type("array of strings", n);
  if (arr->size() > k_max_prefixes)
    return std::to_string(arr->size()) + " prefixes; at most " + std::to_string(k_max_prefixes);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const std::string at = "[" + std::to_string(i) + "] ";
    const auto* v = (*arr)[i].as_string();
    if (!v)
      return at + wrong_type("string", (*arr)[i]);
    const std::string& s = v->get();
    if (s.empty())
      return at + "is empty; a prefix names the start of a device name";
    if (s.size() >= k_ifnamsiz)
      return at + quoted_for_message(s) + " is " + std::to_string(s.size()) +
             " bytes; device names are shorter than " + std::to_string(k_ifnamsiz);
    if (s.find_first_of(std::string_view("/: \t\n\0", 6)) != std::string::npos)
      return at + quoted_for_message(s) + " cannot start a device name (no '/', ':' or space)";
    out.push_back(s);
  }
  field = std::move(out);
  return std::nullopt;
}

problem apply(const toml::node& n, std::vector<std::string>& field, const collectors_rule&) {
  const auto* arr = n.as_array();
  if (!arr)
    return wrong_type("array of strings", n);
  if (arr->size() > k_max_collectors)
    return std::to_string(arr->size()) + " collectors; at most " + std::to_string(k_max_collectors);
  std::vector<std::string> out;
  std::vector<collector_address> parsed;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const std::string at = "[" + std::to_string(i) + "] ";
    const auto* v = (*arr)[i].as_string();
    if (!v)
      return at + wrong_type("string", (*arr)[i]);
    const std::string& s = v->get();
    auto address = parse_collector_address(s);
    if (const auto* what = std::get_if<std::string>(&address))
      return at + quoted_for_message(s) + ": " + *what;
    const auto same = std::find(parsed.begin(), parsed.end(), std::get<collector_address>(address));
    if (same != parsed.end())
      return at + quoted_for_message(s) + " is the same collector as [" +
             std::to_string(same - parsed.begin()) + "]";
    parsed.push_back(std::get<collector_address>(std::move(address)));
    out.push_back(s);
  }
  field = std::move(out);
  return std::nullopt;
}

problem apply(const toml::node& n, uint32_t& field, const ipfix_mtu_rule&) {
  if (const auto* v = n.as_integer(); v && v->get() >= 0 && v->get() < k_ipfix_min_mtu)
    return std::to_string(v->get()) +
           " is too small: one IPFIX message must hold netlens's largest template or record "
           "(at least " +
           std::to_string(k_ipfix_min_mtu) + " bytes)";
  return apply(n, field, count_rule{k_ipfix_min_mtu, 65535});
}

problem apply(const toml::node& n, std::vector<std::string>& field, const traffic_labels_rule&) {
  const auto* arr = n.as_array();
  if (!arr)
    return wrong_type("array of strings", n);
  const auto first_label = std::begin(k_traffic_metrics_labels);
  const auto last_label = std::end(k_traffic_metrics_labels);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const std::string at = "[" + std::to_string(i) + "] ";
    const auto* v = (*arr)[i].as_string();
    if (!v)
      return at + wrong_type("string", (*arr)[i]);
    const std::string& s = v->get();
    if (std::find(first_label, last_label, s) == last_label)
      return at + quoted_for_message(s) + " is not one of " + quoted_list(first_label, last_label);
    const auto same = std::find(out.begin(), out.end(), s);
    if (same != out.end())
      return at + quoted_for_message(s) + " is listed twice (also [" +
             std::to_string(same - out.begin()) + "])";
    out.push_back(s);
  }
  field = std::move(out);
  return std::nullopt;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Looks for what the user probably meant: a table inside the same table (at the top level, a
// top-level table), a key of the same table, then the same name in another table (a key under
// the wrong header).
std::string suggestion(std::string_view name, std::string_view table,
                       const std::vector<key_name>& keys) {
  constexpr std::size_t k_max_distance = 2;
  std::size_t best = k_max_distance + 1;
  std::string best_path;
  auto consider = [&](std::string_view candidate, std::string path) {
    const std::size_t d = edit_distance(name, candidate);
    if (d < best) {
      best = d;
      best_path = std::move(path);
    }
  };
  for (const auto t : known_tables(keys))
    if (parent_of(t) == table)
      consider(leaf_of(t), std::string(t));
  for (const auto& k : keys)
    if (k.table == table)
      consider(k.key, std::string(k.table) + "." + std::string(k.key));
  for (const auto& k : keys)
    if (k.table != table)
      consider(k.key, std::string(k.table) + "." + std::string(k.key));
  return best_path.empty() ? std::string() : " (did you mean " + best_path + "?)";
}

struct located_error {
  toml::source_position where;
  std::string text; // "key.path: what is wrong"
};

std::string unknown(const toml::node& n) {
  return n.is_table() ? "unknown table" : "unknown key";
}

// Walks `section`, the table named `table` ("" for the whole file), and the known tables inside
// it. Values are checked later, by for_each_key.
void find_unknown_keys(const toml::table& section, const std::string& table,
                       const std::vector<key_name>& keys,
                       const std::vector<std::string_view>& tables,
                       std::vector<located_error>& errors) {
  for (auto&& [key, node] : section) {
    // Named outside the lambda: capturing a structured binding is C++20 (clang rejects it).
    const std::string_view name = key.str();
    const std::string path = key_path(table, name);
    // A quoted "export.ipfix" is one key with a dot in it, not the table export.ipfix.
    const std::string child = child_table(table, name);
    if (name.find('.') == std::string_view::npos &&
        std::find(tables.begin(), tables.end(), child) != tables.end()) {
      if (const auto* inner = node.as_table())
        find_unknown_keys(*inner, child, keys, tables, errors);
      else
        errors.push_back({key.source().begin, path + ": " + wrong_type("table", node)});
      continue;
    }
    const bool known = std::any_of(keys.begin(), keys.end(), [&](const key_name& k) {
      return k.table == table && k.key == name;
    });
    if (!known)
      errors.push_back(
          {key.source().begin, path + ": " + unknown(node) + suggestion(name, table, keys)});
  }
}

std::string located(const std::string& source_name, const toml::source_position& where,
                    std::string_view text) {
  return source_name + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) +
         ": " + std::string(text);
}

// toml++ descriptions are one line today; this keeps the one-line promise if that changes.
std::string one_line(std::string_view s) {
  std::string out(s);
  std::replace_if(
      out.begin(), out.end(), [](char ch) { return ch == '\n' || ch == '\r'; }, ' ');
  return out;
}

std::string render_value(bool v) {
  return v ? "true" : "false";
}
std::string render_value(int64_t v) {
  return std::to_string(v);
}
std::string render_value(uint32_t v) {
  return std::to_string(v);
}
std::string render_value(const std::string& v) {
  return quoted(v);
}
std::string render_value(const std::vector<std::string>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i)
    out += (i ? ", " : "") + quoted(v[i]);
  return out + "]";
}
template <typename E> std::enable_if_t<std::is_enum_v<E>, std::string> render_value(E v) {
  for (const auto& e : enum_names<E>::table)
    if (e.value == v)
      return quoted(e.name);
  return quoted("?"); // only reachable through a cast outside the enumerators
}

struct rendered_key {
  std::string_view table;
  std::string_view key;
  std::string value;
};

std::vector<rendered_key> render_values(const config& c) {
  std::vector<rendered_key> out;
  for_each_key(c,
               [&](std::string_view table, std::string_view key, const auto& field, const auto&) {
                 out.push_back({table, key, render_value(field)});
               });
  return out;
}

} // namespace

std::variant<config, config_error> load_config_string(std::string_view toml_text,
                                                      const std::string& source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, std::string_view(source_name));
  } catch (const toml::parse_error& e) {
    return config_error{
        located(source_name, e.source().begin, "syntax error: " + one_line(e.description()))};
  }

  const auto keys = known_keys();
  std::vector<located_error> errors;
  find_unknown_keys(root, "", keys, known_tables(keys), errors);

  config result;
  for_each_key(result, [&](std::string_view table, std::string_view key, auto& field,
                           const auto& rule) {
    const auto* section = find_table(root, table);
    if (!section)
      return;
    const auto it = section->find(key);
    if (it == section->end())
      return;
    if (auto what = apply(it->second, field, rule))
      errors.push_back({it->first.source().begin, key_path(table, key) + ": " + std::move(*what)});
  });

  if (errors.empty())
    return result;
  // Tables iterate in key order, not file order; sorting makes "the first error" mean the first
  // one a reader meets, whatever order the checks ran in.
  const auto first = std::min_element(
      errors.begin(), errors.end(), [](const located_error& a, const located_error& b) {
        return std::tie(a.where.line, a.where.column) < std::tie(b.where.line, b.where.column);
      });
  return config_error{located(source_name, first->where, first->text)};
}

std::variant<config, config_error> load_config_file(const std::string& path) {
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rbe"),
                                                             &std::fclose);
  auto cannot_read = [&](int err) {
    return config_error{path + ": cannot read: " + std::generic_category().message(err),
                        no_code::none, err};
  };
  if (!file)
    return cannot_read(errno);
  std::string text;
  char buf[8192];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, file.get())) > 0)
    text.append(buf, n);
  // errno is only meaningful when the stream says a read failed (a directory gives EISDIR here).
  if (std::ferror(file.get()))
    return cannot_read(errno);
  return load_config_string(text, path);
}

std::string render_effective_config(const config& c, const config& defaults) {
  const auto values = render_values(c);
  const auto default_values = render_values(defaults);
  std::string out;
  std::string_view table;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto& v = values[i];
    if (v.table != table) {
      out += (out.empty() ? "[" : "\n[") + std::string(v.table) + "]\n";
      table = v.table;
    }
    out += std::string(v.key) + " = " + v.value;
    if (v.value == default_values[i].value)
      out += " # default";
    out += '\n';
  }
  return out;
}

std::vector<std::string> changed_config_keys(const config& a, const config& b) {
  const auto va = render_values(a);
  const auto vb = render_values(b);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < va.size(); ++i)
    if (va[i].value != vb[i].value)
      out.push_back(std::string(va[i].table) + "." + std::string(va[i].key));
  return out;
}

std::vector<std::string> config_key_paths() {
  std::vector<std::string> paths;
  for (const auto& k : known_keys())
    paths.push_back(std::string(k.table) + "." + std::string(k.key));
  return paths;
}

} // namespace netlens
