// The console's command language: a line in, a validated command or an error naming the
// problem out; the completion candidates for a partly typed line; and the byte-level rules a
// line must pass first (length, no binary or control bytes). No CAF, no sockets.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "flow/failure.hpp"

namespace netlens {

enum class command_kind {
  help,
  actors,
  inspect,
  conns,
  cache,
  config,
  log_level,
  top,
  shutdown,
  quit,
  complete, // what the client asks for tab completion
};

// conns FILTER: every given key must match (addresses and ports match either end, or the
// translation conntrack reported).
struct conn_filter {
  struct address {
    uint16_t family = 0; // AF_INET or AF_INET6
    std::array<uint8_t, 16> bytes{};
  };
  std::optional<address> addr;
  std::optional<uint16_t> port;
  std::optional<uint32_t> pid;
  std::optional<uint32_t> netns;
  std::optional<uint8_t> protocol; // IPPROTO_TCP or IPPROTO_UDP
  bool empty() const { return !addr && !port && !pid && !netns && !protocol; }
};

constexpr uint32_t k_cache_default_rows = 20;
constexpr uint32_t k_cache_max_rows = 1000;

struct console_command {
  command_kind kind = command_kind::help;
  std::string argument; // inspect: the actor; log_level: the level; help: a command or empty
  conn_filter filter;   // conns
  uint32_t rows = k_cache_default_rows; // cache
  std::string text;                     // complete: the line being completed, as typed so far
};

using parse_error = failure<>;

// Why a line is refused before it is parsed, or nothing. Printable ASCII and tabs only: a
// control or non-ASCII byte is named with its column, so a stray paste is easy to find.
std::optional<std::string> check_line_bytes(std::string_view line);

// Words separated by spaces or tabs; no quoting (no argument needs a space).
std::vector<std::string> tokenize(std::string_view line);

// An empty line parses as an error the session ignores (see is_blank).
std::variant<console_command, parse_error> parse_command(std::string_view line);
bool is_blank(std::string_view line);

// Words that can replace the last word of `line` (the word being typed, empty after a space).
// actor_names: for `inspect`.
std::vector<std::string> completion_candidates(std::string_view line,
                                               const std::vector<std::string>& actor_names);

// Command names in the order `help` lists them (complete is the client's, not listed).
const std::vector<std::string>& command_names();

// The help text: every command, or one command's usage. Error when there is no such command.
std::variant<std::string, parse_error> help_text(const std::string& command);

constexpr std::array<const char*, 7> k_log_levels = {"trace", "debug",    "info", "warn",
                                                     "error", "critical", "off"};

} // namespace netlens
