// Fuzzes what the console does with the bytes a session sends: cutting them into bounded lines,
// the byte checks, the command parser and tab completion. Any input must give commands or
// errors, never a crash, and the parser's answers must agree with its own rules.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "actors/console/command_parser.hpp"
#include "actors/console/line_reader.hpp"

namespace {

constexpr size_t k_max_line = 256;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "console_parser_fuzz: %s\n", what);
    std::abort();
  }
}

void check_line(const std::string& line) {
  require(line.size() <= k_max_line, "a line longer than the bound came out");
  require(line.find('\n') == std::string::npos, "a line holds a newline");
  bool bytes_ok = !netlens::check_line_bytes(line).has_value();
  auto parsed = netlens::parse_command(line);
  if (auto* cmd = std::get_if<netlens::console_command>(&parsed)) {
    require(bytes_ok, "a line with a refused byte parsed");
    require(!netlens::tokenize(line).empty(), "an empty line parsed");
    if (cmd->kind == netlens::command_kind::cache)
      require(cmd->rows >= 1 && cmd->rows <= netlens::k_cache_max_rows, "cache rows out of range");
    if (cmd->kind == netlens::command_kind::help)
      require(std::holds_alternative<std::string>(netlens::help_text(cmd->argument)),
              "help accepted a command it cannot explain");
    if (cmd->kind == netlens::command_kind::complete) {
      // What the client asks on tab: every candidate extends the word being typed.
      auto candidates = netlens::completion_candidates(cmd->text, {"tracer", "conntrack"});
      std::string_view text = cmd->text;
      size_t cut = text.find_last_of(" \t");
      std::string_view current = cut == std::string_view::npos ? text : text.substr(cut + 1);
      for (auto& c : candidates)
        require(std::string_view(c).substr(0, current.size()) == current,
                "a completion candidate does not extend the typed word");
    }
  } else {
    require(!std::get<netlens::parse_error>(parsed).message.empty(), "an error without a message");
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  netlens::line_reader reader(k_max_line);
  // Fed in two pieces, as a socket may deliver them.
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  size_t half = size / 2;
  reader.feed(bytes.substr(0, half));
  reader.feed(bytes.substr(half));
  while (auto ev = reader.next()) {
    if (ev->too_long) {
      require(ev->length > k_max_line && ev->line.empty(), "a too-long event is wrong");
      continue;
    }
    require(ev->length <= k_max_line, "a line over the bound was not reported");
    check_line(ev->line);
  }
  return 0;
}
