// find_netns against trees laid out by hand: a name under the run_netns root, a process under
// the proc root (the kernel test covers a namespace only a descriptor of ours holds).
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <variant>

#include "flow/netns_search.hpp"
#include "tests/support/temp_dir.hpp"

using namespace netlens;

namespace {

struct fake_tree {
  testing::temp_dir dir{"nltest-nssearch-"};
  std::string root = dir.path();
  fake_tree() {
    REQUIRE(std::system(("mkdir -p " + root + "/run " + root + "/proc").c_str()) == 0);
  }
  std::string file(const std::string& rel) { return dir.write(rel); }
  static uint32_t inode(const std::string& path) {
    struct stat st {};
    REQUIRE(stat(path.c_str(), &st) == 0);
    return static_cast<uint32_t>(st.st_ino);
  }
  netns_search_roots roots() const { return {root + "/run", root + "/proc"}; }
};

} // namespace

TEST_CASE("find_netns opens a namespace by its name when no process is in it",
          "[netns][netns_search]") {
  fake_tree t;
  t.file("run/other");
  const uint32_t want = fake_tree::inode(t.file("run/blue"));
  t.file("proc/4242/ns/net"); // a process in another namespace
  auto found = find_netns(want, t.roots());
  REQUIRE(std::holds_alternative<netns_handle>(found));
  const auto& h = std::get<netns_handle>(found);
  CHECK(h.valid());
  CHECK(h.inode() == want);
  struct stat st {};
  REQUIRE(fstat(h.fd(), &st) == 0);
  CHECK(st.st_ino == want);
  CHECK(h.opened_from() == 0);
}

TEST_CASE("find_netns opens a namespace through a process in it", "[netns][netns_search]") {
  fake_tree t;
  t.file("run/other");
  t.file("proc/1/ns/net");
  const uint32_t want = fake_tree::inode(t.file("proc/4242/ns/net"));
  auto found = find_netns(want, t.roots());
  REQUIRE(std::holds_alternative<netns_handle>(found));
  const auto& h = std::get<netns_handle>(found);
  CHECK(h.inode() == want);
  CHECK(h.opened_from() == 4242);
  struct stat st {};
  REQUIRE(fstat(h.fd(), &st) == 0);
  CHECK(st.st_ino == want);
}

TEST_CASE("find_netns says where it looked when nothing reaches the namespace",
          "[netns][netns_search]") {
  fake_tree t;
  const uint32_t taken = fake_tree::inode(t.file("run/blue"));
  t.file("proc/4242/ns/net");
  auto found = find_netns(taken + 100000, t.roots());
  REQUIRE(std::holds_alternative<netns_error>(found));
  const auto& err = std::get<netns_error>(found);
  CHECK(err.message.find(std::to_string(taken + 100000)) != std::string::npos);
  CHECK(err.message.find(t.root + "/run") != std::string::npos);
  CHECK(err.message.find("no process in it") != std::string::npos);

  // A proc root that cannot be read is named too.
  netns_search_roots bad{t.root + "/run", t.root + "/no-such-proc"};
  auto again = find_netns(taken + 100000, bad);
  REQUIRE(std::holds_alternative<netns_error>(again));
  CHECK(std::get<netns_error>(again).message.find("no-such-proc") != std::string::npos);
}
