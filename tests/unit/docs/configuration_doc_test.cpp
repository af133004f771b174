// docs/configuration.md against the loader itself: every key config_key_paths() knows has its
// section, and no section names a key the loader no longer knows. (config_doc_in_sync checks
// the page is what scripts/gen-config-doc makes of config/netlens.toml.)
#include <catch2/catch.hpp>

#include <fstream>
#include <regex>
#include <set>
#include <string>

#include "config/config_loader.hpp"

TEST_CASE("docs/configuration.md has a section for every configuration key, and only those",
          "[config][docs]") {
  std::ifstream in(NETLENS_SOURCE_DIR "/docs/configuration.md");
  REQUIRE(in);
  std::set<std::string> documented;
  static const std::regex heading(R"(### `([a-z_]+(?:\.[a-z_]+)+)`)");
  std::string line;
  std::smatch m;
  while (std::getline(in, line))
    if (std::regex_match(line, m, heading))
      documented.insert(m[1]);

  const auto known = netlens::config_key_paths();
  REQUIRE(!known.empty());
  for (const auto& key : known) {
    INFO(key);
    CHECK(documented.count(key) == 1);
  }
  const std::set<std::string> known_set(known.begin(), known.end());
  for (const auto& key : documented) {
    INFO(key << " is documented but the loader does not know it");
    CHECK(known_set.count(key) == 1);
  }
}
