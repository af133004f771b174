#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <variant>

#include "actors/netns/container_id.hpp"
#include "flow/proc_scan.hpp"
#include "tests/support/temp_dir.hpp"

using namespace netlens;

namespace {

const std::string k_id = "aa4a9c1e2b7d8e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

// A directory laid out like /proc: pid directories with ns/net, comm and cgroup files, plus the
// entries a real /proc has that are not processes. Removed at the end.
struct fake_proc {
  testing::temp_dir dir{"nltest-proc-"};
  std::string root = dir.path();

  void file(const std::string& rel, const std::string& text) { dir.write(rel, text); }
  uint32_t inode(const std::string& rel) {
    struct stat st {};
    REQUIRE(stat((root + "/" + rel).c_str(), &st) == 0);
    return static_cast<uint32_t>(st.st_ino);
  }
};

} // namespace

TEST_CASE("proc_scanner lists pid directories with their namespace inode", "[netns][proc_scan]") {
  fake_proc p;
  p.file("1/ns/net", "");
  p.file("1/comm", "systemd\n");
  p.file("1/cgroup", "0::/init.scope\n");
  p.file("4242/ns/net", "");
  p.file("4242/comm", "nginx\n");
  p.file("4242/cgroup", "0::/system.slice/docker-" + k_id + ".scope\n");
  // As the kernel shows it: a link whose text names the inode.
  p.file("4243/comm", "envoy\n");
  (void)!std::system(
      ("mkdir -p " + p.root + "/4243/ns && ln -s 'net:[4026532001]' " + p.root + "/4243/ns/net")
          .c_str());
  p.file("77/comm", "zombie\n"); // no ns/net: gone or a zombie
  p.file("abc/ns/net", "");      // not a pid
  p.file("012/ns/net", "");      // not how the kernel spells a pid
  p.file("self/ns/net", "");
  p.file("123", ""); // a file, not a directory
  (void)!std::system(("ln -s 4242 " + p.root + "/999").c_str());

  auto opened = proc_scanner::open(p.root);
  REQUIRE(std::holds_alternative<proc_scanner>(opened));
  auto& scanner = std::get<proc_scanner>(opened);

  std::map<pid_t, proc_process> seen;
  auto stats = scanner.scan({}, [&](const proc_process& pr) { seen[pr.pid] = pr; });
  CHECK(stats.error.empty());
  CHECK(stats.processes == 3);
  CHECK(stats.without_netns == 1);
  REQUIRE(seen.size() == 3);
  CHECK(seen[4243].netns_inode == 4026532001u);
  CHECK(seen[4243].comm == "envoy");
  CHECK(seen[1].comm == "systemd");
  CHECK(seen[1].netns_inode == p.inode("1/ns/net"));
  CHECK(seen[4242].comm == "nginx");
  CHECK(seen[4242].netns_inode == p.inode("4242/ns/net"));

  // Without comm nothing else is read; a second scan rewinds.
  seen.clear();
  stats = scanner.scan({false}, [&](const proc_process& pr) { seen[pr.pid] = pr; });
  CHECK(stats.processes == 3);
  CHECK(seen[4242].comm.empty());
  CHECK(seen[4242].netns_inode == p.inode("4242/ns/net"));

  CHECK(container_id_of(scanner, 4242) == k_id);
  CHECK(container_id_of(scanner, 1) == std::string());
  CHECK_FALSE(container_id_of(scanner, 5).has_value());
  CHECK(scanner.comm(4242) == std::string("nginx"));
  CHECK_FALSE(scanner.comm(5).has_value());
  CHECK(scanner.netns_inode(1) == p.inode("1/ns/net"));
  CHECK(scanner.netns_inode(77) == 0);
}

TEST_CASE("proc_scanner finds this process in the real /proc", "[netns][proc_scan]") {
  auto opened = proc_scanner::open();
  REQUIRE(std::holds_alternative<proc_scanner>(opened));
  auto& scanner = std::get<proc_scanner>(opened);
  struct stat st {};
  REQUIRE(stat("/proc/self/ns/net", &st) == 0);
  std::optional<proc_process> me;
  auto stats = scanner.scan({}, [&](const proc_process& pr) {
    if (pr.pid == getpid())
      me = pr;
  });
  CHECK(stats.error.empty());
  CHECK(stats.processes >= 1);
  REQUIRE(me);
  CHECK(me->netns_inode == static_cast<uint32_t>(st.st_ino));
  std::ifstream comm("/proc/self/comm");
  std::string expected;
  std::getline(comm, expected);
  CHECK(me->comm == expected);
  CHECK(container_id_of(scanner, getpid()).has_value());
}

TEST_CASE("proc_scanner reports a root it cannot open", "[netns][proc_scan]") {
  auto opened = proc_scanner::open("/nonexistent-nltest-proc");
  REQUIRE(std::holds_alternative<std::string>(opened));
  CHECK(std::get<std::string>(opened).find("/nonexistent-nltest-proc") != std::string::npos);
}
