// The man pages the build writes (build/doc), rendered by man(1) itself, against the program's
// own command line (define_cli) and the loader's own keys (config_key_paths): a flag, a
// subcommand, a choice or a key missing from a page fails here, and so does a page groff warns
// about.
#include <catch2/catch.hpp>

#include <array>
#include <cstdio>
#include <regex>
#include <set>
#include <string>
#include <unistd.h>

#include "apps/netlens/cli.hpp"
#include "config/config_loader.hpp"

namespace {

struct rendered {
  std::string text;
  std::string warnings;
  int status = -1;
};

// `man --warnings -l PAGE`, the page as text (no formatting: stdout is a pipe) and what groff
// says on stderr.
rendered render(const std::string& page) {
  const std::string err_file = "/tmp/netlens-man-test." + std::to_string(getpid());
  const std::string cmd = "MANWIDTH=200 man --warnings -l '" + page + "' 2>'" + err_file + "'";
  rendered r;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0)
    r.text.append(buf.data(), n);
  r.status = pclose(p);
  if (FILE* e = std::fopen(err_file.c_str(), "r")) {
    while ((n = fread(buf.data(), 1, buf.size(), e)) > 0)
      r.warnings.append(buf.data(), n);
    std::fclose(e);
  }
  std::remove(err_file.c_str());
  return r;
}

bool has_word(const std::string& text, const std::string& word) {
  // The word stands alone: not inside a longer flag or key ("--port" in "--portable").
  const std::regex re("(^|[^A-Za-z0-9_.-])" +
                      std::regex_replace(word, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                      "([^A-Za-z0-9_-]|$)");
  return std::regex_search(text, re);
}

} // namespace

TEST_CASE("netlens(8) names every subcommand, option and choice the program parses",
          "[docs][man]") {
  const auto page = render(NETLENS_DOC_DIR "/netlens.8");
  REQUIRE(page.status == 0);
  CHECK(page.warnings.empty());
  INFO(page.text);

  CLI::App app;
  netlens::cli_values values;
  netlens::define_cli(app, values);
  int checked = 0;
  auto check_options = [&](const CLI::App& a) {
    for (const CLI::Option* o : a.get_options()) {
      for (const auto& s : o->get_snames()) {
        CHECK(has_word(page.text, "-" + s));
        ++checked;
      }
      for (const auto& l : o->get_lnames()) {
        CHECK(has_word(page.text, "--" + l));
        ++checked;
      }
      const std::string type = o->get_type_name();
      if (auto open = type.find(":{"); open != std::string::npos) {
        std::string list = type.substr(open + 2, type.find('}', open) - open - 2);
        for (size_t at = 0; at <= list.size();) {
          size_t comma = std::min(list.find(',', at), list.size());
          const std::string choice = list.substr(at, comma - at);
          INFO("choice " << choice << " of " << o->get_name());
          CHECK(page.text.find(choice) != std::string::npos);
          at = comma + 1;
        }
      }
    }
  };
  check_options(app);
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    INFO("subcommand " << sub->get_name());
    CHECK(page.text.find("netlens " + sub->get_name()) != std::string::npos);
    check_options(*sub);
  }
  CHECK(checked > 20);
  for (const char* section : {"SYNOPSIS", "EXIT STATUS", "FILES", "SIGNALS", "CAPABILITIES"})
    CHECK(page.text.find(section) != std::string::npos);
}

TEST_CASE("netlens.toml(5) names every configuration key the loader knows", "[docs][man]") {
  const auto page = render(NETLENS_DOC_DIR "/netlens.toml.5");
  REQUIRE(page.status == 0);
  CHECK(page.warnings.empty());
  const auto known = netlens::config_key_paths();
  REQUIRE(known.size() > 50);
  for (const auto& key : known) {
    INFO(key);
    CHECK(has_word(page.text, key + " ="));
  }
}
