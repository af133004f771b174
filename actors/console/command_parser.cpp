#include "actors/console/command_parser.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <charconv>
#include <cstdio>
#include <netinet/in.h>
#include <sys/socket.h>

namespace netlens {
namespace {

struct command_info {
  const char* name;
  command_kind kind;
  const char* usage;
  const char* summary;
};

const std::vector<command_info>& commands() {
  static const std::vector<command_info> table = {
      {"help", command_kind::help, "help [COMMAND]", "the commands, or one command's usage"},
      {"actors", command_kind::actors, "actors",
       "every actor: id, state, mailbox, messages handled and per second, restarts, uptime"},
      {"inspect", command_kind::inspect, "inspect ACTOR", "one actor's own counters"},
      {"conns", command_kind::conns, "conns [addr=IP] [port=N] [pid=N] [netns=N] [proto=tcp|udp]",
       "live connections, filtered (every given key must match)"},
      {"cache", command_kind::cache, "cache [N]",
       "the first N conntrack cache entries, most recently used first (default 20, at most "
       "1000)"},
      {"config", command_kind::config, "config", "the effective configuration, defaults marked"},
      {"log", command_kind::log_level, "log level LEVEL",
       "set the agent's log level: trace, debug, info, warn, error, critical or off"},
      {"top", command_kind::top, "top",
       "actors and event rates, refreshed each second; a key ends it"},
      {"shutdown", command_kind::shutdown, "shutdown",
       "run the ordered shutdown (stop, purge, exit), printing each phase as it ends"},
      {"quit", command_kind::quit, "quit", "end this session (the agent keeps running)"},
  };
  return table;
}

const command_info* find_command(const std::string& name) {
  for (auto& c : commands())
    if (name == c.name)
      return &c;
  return nullptr;
}

bool is_space(char c) {
  return c == ' ' || c == '\t';
}

template <class T> std::optional<T> parse_number(const std::string& s) {
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty())
    return std::nullopt;
  return v;
}

parse_error usage_error(const command_info& c, const std::string& what) {
  return {what + " (usage: " + c.usage + ")"};
}

std::variant<conn_filter, parse_error> parse_filter(const command_info& c,
                                                    const std::vector<std::string>& words) {
  conn_filter f;
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& w = words[i];
    size_t eq = w.find('=');
    if (eq == std::string::npos || eq == 0)
      return usage_error(c, "filter '" + w + "' is not KEY=VALUE");
    std::string key = w.substr(0, eq);
    std::string value = w.substr(eq + 1);
    if (value.empty())
      return usage_error(c, "filter " + key + "= has no value");
    auto twice = [&](bool set) -> std::optional<parse_error> {
      if (set)
        return usage_error(c, "filter key " + key + " given twice");
      return std::nullopt;
    };
    if (key == "addr") {
      if (auto e = twice(f.addr.has_value()))
        return *e;
      conn_filter::address a;
      if (inet_pton(AF_INET, value.c_str(), a.bytes.data()) == 1)
        a.family = AF_INET;
      else if (inet_pton(AF_INET6, value.c_str(), a.bytes.data()) == 1)
        a.family = AF_INET6;
      else
        return usage_error(c, "addr=" + value + " is not an IPv4 or IPv6 address");
      f.addr = a;
    } else if (key == "port") {
      if (auto e = twice(f.port.has_value()))
        return *e;
      auto v = parse_number<uint16_t>(value);
      if (!v)
        return usage_error(c, "port=" + value + " is not a port number (0 to 65535)");
      f.port = *v;
    } else if (key == "pid") {
      if (auto e = twice(f.pid.has_value()))
        return *e;
      auto v = parse_number<uint32_t>(value);
      if (!v)
        return usage_error(c, "pid=" + value + " is not a process id");
      f.pid = *v;
    } else if (key == "netns") {
      if (auto e = twice(f.netns.has_value()))
        return *e;
      auto v = parse_number<uint32_t>(value);
      if (!v)
        return usage_error(c, "netns=" + value + " is not a namespace inode number");
      f.netns = *v;
    } else if (key == "proto") {
      if (auto e = twice(f.protocol.has_value()))
        return *e;
      if (value == "tcp")
        f.protocol = IPPROTO_TCP;
      else if (value == "udp")
        f.protocol = IPPROTO_UDP;
      else
        return usage_error(c, "proto=" + value + " is neither tcp nor udp");
    } else {
      return usage_error(c, "unknown filter key '" + key + "'");
    }
  }
  return f;
}

std::vector<std::string> with_prefix(const std::vector<std::string>& words,
                                     const std::string& prefix) {
  std::vector<std::string> out;
  for (auto& w : words)
    if (w.compare(0, prefix.size(), prefix) == 0)
      out.push_back(w);
  return out;
}

} // namespace

std::optional<std::string> check_line_bytes(std::string_view line) {
  for (size_t i = 0; i < line.size(); ++i) {
    auto b = static_cast<unsigned char>(line[i]);
    if (b == '\t' || (b >= 0x20 && b < 0x7f))
      continue;
    char hex[8];
    std::snprintf(hex, sizeof(hex), "0x%02x", b);
    return std::string(b >= 0x80 ? "non-ASCII byte " : "control byte ") + hex + " at column " +
           std::to_string(i + 1) + ": commands are printable ASCII";
  }
  return std::nullopt;
}

std::vector<std::string> tokenize(std::string_view line) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_space(line[i]))
      ++i;
    size_t start = i;
    while (i < line.size() && !is_space(line[i]))
      ++i;
    if (i > start)
      words.emplace_back(line.substr(start, i - start));
  }
  return words;
}

bool is_blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), is_space);
}

std::variant<console_command, parse_error> parse_command(std::string_view line) {
  if (auto bad = check_line_bytes(line))
    return parse_error{*bad};
  auto words = tokenize(line);
  if (words.empty())
    return parse_error{"empty command"};
  console_command cmd;
  if (words[0] == "complete") {
    // Everything after "complete " as typed, spaces included: the last word may be empty.
    size_t at = line.find("complete");
    std::string_view rest = line.substr(at + 8);
    if (!rest.empty() && is_space(rest.front()))
      rest.remove_prefix(1);
    cmd.kind = command_kind::complete;
    cmd.text = std::string(rest);
    return cmd;
  }
  const command_info* c = find_command(words[0]);
  if (!c)
    return parse_error{"unknown command '" + words[0] + "' (type help for the list)"};
  cmd.kind = c->kind;
  auto no_arguments = [&]() -> std::optional<parse_error> {
    if (words.size() > 1)
      return usage_error(*c, std::string(c->name) + " takes no arguments");
    return std::nullopt;
  };
  switch (c->kind) {
  case command_kind::help:
    if (words.size() > 2)
      return usage_error(*c, "help takes at most one command name");
    if (words.size() == 2) {
      if (!find_command(words[1]))
        return parse_error{"no command named '" + words[1] + "' (type help for the list)"};
      cmd.argument = words[1];
    }
    return cmd;
  case command_kind::inspect:
    if (words.size() != 2)
      return usage_error(*c, "inspect needs exactly one actor name");
    cmd.argument = words[1];
    return cmd;
  case command_kind::conns: {
    auto f = parse_filter(*c, words);
    if (auto* e = std::get_if<parse_error>(&f))
      return *e;
    cmd.filter = std::get<conn_filter>(f);
    return cmd;
  }
  case command_kind::cache:
    if (words.size() > 2)
      return usage_error(*c, "cache takes at most one number");
    if (words.size() == 2) {
      auto n = parse_number<uint32_t>(words[1]);
      if (!n || *n == 0 || *n > k_cache_max_rows)
        return usage_error(*c, "'" + words[1] + "' is not a number from 1 to " +
                                   std::to_string(k_cache_max_rows));
      cmd.rows = *n;
    }
    return cmd;
  case command_kind::log_level: {
    if (words.size() < 2 || words[1] != "level")
      return usage_error(*c, "log needs 'level'");
    if (words.size() != 3)
      return usage_error(*c, "log level needs exactly one level");
    bool known = std::any_of(k_log_levels.begin(), k_log_levels.end(),
                             [&](const char* l) { return words[2] == l; });
    if (!known)
      return usage_error(*c, "unknown log level '" + words[2] + "'");
    cmd.argument = words[2];
    return cmd;
  }
  default:
    if (auto e = no_arguments())
      return *e;
    return cmd;
  }
}

const std::vector<std::string>& command_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (auto& c : commands())
      out.emplace_back(c.name);
    return out;
  }();
  return names;
}

std::vector<std::string> completion_candidates(std::string_view line,
                                               const std::vector<std::string>& actor_names) {
  if (check_line_bytes(line))
    return {};
  auto words = tokenize(line);
  bool new_word = line.empty() || is_space(line.back());
  std::string current = new_word || words.empty() ? "" : words.back();
  if (!new_word && !words.empty())
    words.pop_back();
  // words: the ones before the word being completed.
  if (words.empty())
    return with_prefix(command_names(), current);
  const std::string& cmd = words[0];
  if (cmd == "help" && words.size() == 1)
    return with_prefix(command_names(), current);
  if (cmd == "inspect" && words.size() == 1)
    return with_prefix(actor_names, current);
  if (cmd == "log" && words.size() == 1)
    return with_prefix({"level"}, current);
  if (cmd == "log" && words.size() == 2 && words[1] == "level")
    return with_prefix({k_log_levels.begin(), k_log_levels.end()}, current);
  if (cmd == "conns") {
    if (current.rfind("proto=", 0) == 0)
      return with_prefix({"proto=tcp", "proto=udp"}, current);
    std::vector<std::string> keys;
    for (const char* k : {"addr=", "port=", "pid=", "netns=", "proto="}) {
      bool used = std::any_of(words.begin() + 1, words.end(),
                              [&](const std::string& w) { return w.rfind(k, 0) == 0; });
      if (!used)
        keys.emplace_back(k);
    }
    return with_prefix(keys, current);
  }
  return {};
}

std::variant<std::string, parse_error> help_text(const std::string& command) {
  if (!command.empty()) {
    const command_info* c = find_command(command);
    if (!c)
      return parse_error{"no command named '" + command + "' (type help for the list)"};
    return std::string(c->usage) + "\n  " + c->summary + "\n";
  }
  size_t width = 0;
  for (auto& c : commands())
    width = std::max(width, std::string_view(c.usage).size());
  width = std::min<size_t>(width, 20);
  std::string out = "commands:\n";
  for (auto& c : commands()) {
    std::string usage = c.usage;
    if (usage.size() > width)
      usage = std::string(c.name) + " ...";
    out += "  " + usage + std::string(width - std::min(width, usage.size()) + 2, ' ') + c.summary +
           "\n";
  }
  out += "Tab completes commands and actor names; help COMMAND shows its usage.\n";
  return out;
}

} // namespace netlens
