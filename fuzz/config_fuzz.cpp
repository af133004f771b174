// Fuzzes the netlens.toml loader (toml++ included, as it is compiled into it): any text must
// give a config or a one-line error, never a crash, a hang or an exception. A config it accepts
// must survive the console's `config` rendering: rendered and loaded again, it is the same.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "config/config_loader.hpp"

namespace {

const std::string k_source = "fuzz.toml";

// toml++ 3.3.0 (Debian 12's) reaches __builtin_unreachable() when it asks whether one of these
// code points is whitespace (upstream issues #190 and #295, fixed after 3.3.0): its lookup cuts
// U+00A0..U+FEFF into blocks of 0x3FA and has no case for blocks 0, 11 and 63 beyond their one
// whitespace character. Here toml++ is compiled in with UBSan, which stops on it at once; the
// packaged library the agent links rejects them cleanly, as config_loader_test checks for every
// one of them. Inputs holding one are skipped, or this target would find nothing else.
bool toml_mishandles(char32_t c) {
  if (c <= 0xA0 || c >= 0xFEFF || c == 0x3000)
    return false;
  const auto block = (c - 0xA0) / 0x3FA;
  return block == 0 || block == 11 || block == 63;
}

bool has_code_point_toml_mishandles(std::string_view text) {
  const auto continuation = [&](size_t i) {
    return i < text.size() && (static_cast<uint8_t>(text[i]) & 0xC0) == 0x80;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const auto lead = static_cast<uint8_t>(text[i]);
    char32_t c;
    if (lead >= 0xC2 && lead <= 0xDF && continuation(i + 1))
      c = (char32_t{lead & 0x1Fu} << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3Fu);
    else if (lead >= 0xE0 && lead <= 0xEF && continuation(i + 1) && continuation(i + 2))
      c = (char32_t{lead & 0x0Fu} << 12) | ((static_cast<uint8_t>(text[i + 1]) & 0x3Fu) << 6) |
          (static_cast<uint8_t>(text[i + 2]) & 0x3Fu);
    else
      continue;
    if (toml_mishandles(c))
      return true;
  }
  return false;
}

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "config_fuzz: %s\n%s\n", what, detail.c_str());
  std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (has_code_point_toml_mishandles(text))
    return -1; // not kept in the corpus either
  auto result = netlens::load_config_string(text, k_source);

  if (const auto* error = std::get_if<netlens::config_error>(&result)) {
    // Editors and terminals jump to FILE:LINE:COLUMN; a second line would break that.
    if (error->message.compare(0, k_source.size() + 1, k_source + ":") != 0)
      fail("error message does not start with the source name", error->message);
    if (error->message.find('\n') != std::string::npos)
      fail("error message spans more than one line", error->message);
    return 0;
  }

  const auto& loaded = std::get<netlens::config>(result);
  const std::string rendered = netlens::render_effective_config(loaded, netlens::config{});
  auto again = netlens::load_config_string(rendered, k_source);
  if (const auto* error = std::get_if<netlens::config_error>(&again))
    fail("the rendering of an accepted config is rejected", error->message + "\n" + rendered);
  if (!(std::get<netlens::config>(again) == loaded))
    fail("the rendering of an accepted config loads as another config", rendered);
  return 0;
}
