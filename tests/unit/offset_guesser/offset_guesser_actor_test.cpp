// The offset guesser actor as a shell: answers from the offsets cache (so no kernel work and
// no privileges), keeps its first answer, forgets it on purge, reports what it did.
#include <catch2/catch.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

#include "actors/offset_guesser/offset_cache.hpp"
#include "actors/offset_guesser/offset_guesser_actor.hpp"

using namespace netlens;

namespace {

struct cache_dir {
  std::string path;
  cache_dir() {
    char tmpl[] = "/tmp/netlens-guesser-actor.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~cache_dir() {
    std::remove(offsets_cache_path(path, kernel_release()).c_str());
    rmdir(path.c_str());
  }
};

uint64_t counter(const actor_stats& s, const std::string& name) {
  for (const auto& [k, v] : s.counters)
    if (k == name)
      return v;
  FAIL("no counter " << name);
  return 0;
}

} // namespace

TEST_CASE("the guesser actor answers from the cache, keeps the answer, forgets it on purge",
          "[offset_guesser]") {
  cache_dir dir;
  // Offsets no kernel has: the answer can only have come from this file.
  nl_offsets written{};
  auto* slots = reinterpret_cast<__u16*>(&written);
  for (size_t i = 0; i < sizeof(nl_offsets) / sizeof(__u16); ++i)
    slots[i] = static_cast<__u16>(1000 + 8 * i);
  std::string file = offsets_cache_path(dir.path, kernel_release());
  REQUIRE(write_offsets_cache(file, kernel_release(), written).empty());

  caf::actor_system_config cfg;
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  guess_settings settings;
  settings.cache_dir = dir.path;
  auto guesser = spawn_offset_guesser(sys, settings);
  caf::scoped_actor self{sys};

  auto ask = [&] {
    guessed_offsets got;
    self->request(guesser, std::chrono::seconds(10), guess_atom::value)
        .receive([&](const guessed_offsets& r) { got = r; },
                 [&](caf::error& e) { FAIL(sys.render(e)); });
    return got;
  };
  auto stats = [&] {
    actor_stats got;
    self->request(guesser, std::chrono::seconds(10), stats_atom::value)
        .receive([&](const actor_stats& s) { got = s; },
                 [&](caf::error& e) { FAIL(sys.render(e)); });
    return got;
  };

  self->request(guesser, std::chrono::seconds(10), init_atom::value)
      .receive([](caf::ok_atom) {}, [&](caf::error& e) { FAIL(sys.render(e)); });
  guessed_offsets first = ask();
  REQUIRE(first.ok);
  CHECK(first.from_cache);
  CHECK(std::memcmp(&first.offsets, &written, sizeof(written)) == 0);

  // The file goes away: the second answer is the actor's own.
  std::remove(file.c_str());
  guessed_offsets second = ask();
  CHECK(second.ok);
  CHECK(std::memcmp(&second.offsets, &written, sizeof(written)) == 0);
  auto s = stats();
  CHECK(s.name == "offset_guesser");
  CHECK(s.state == actor_state::guessed);
  CHECK(counter(s, "guesses") == 1);
  CHECK(counter(s, "have_answer") == 1);
  CHECK(counter(s, "last_from_cache") == 1);

  self->request(guesser, std::chrono::seconds(10), purge_atom::value)
      .receive([](caf::ok_atom) {}, [&](caf::error& e) { FAIL(sys.render(e)); });
  s = stats();
  CHECK(s.state == actor_state::purged);
  CHECK(counter(s, "have_answer") == 0);
  self->send_exit(guesser, caf::exit_reason::user_shutdown);
}
