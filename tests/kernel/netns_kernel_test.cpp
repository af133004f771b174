// The netns resolver's cores against real namespaces: a namespace the test creates with a
// process in it is found by the /proc scan under the right inode and opened by its pid; a
// process that moves or dies is refused; purge leaves no fd open. Needs root.
// Tags: [kernel][netns]. No packet is sent.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <variant>
#include <vector>

#include "actors/netns/container_id.hpp"
#include "actors/netns/netns_cache.hpp"
#include "flow/netns_handle.hpp"
#include "flow/netns_search.hpp"
#include "flow/proc_scan.hpp"
#include "flow/socket_table.hpp"
#include "tests/support/open_fds.hpp"
#include "tests/support/orphan_netns.hpp"

using netlens::testing::open_fds;

using namespace netlens;
using namespace std::chrono_literals;

namespace {

const std::string k_prefix = "nltest-netns-";

int sh(const std::string& cmd) {
  return std::system(cmd.c_str());
}

uint32_t inode_of_path(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint32_t>(st.st_ino) : 0;
}

void stop_child(pid_t& pid) {
  if (pid <= 0)
    return;
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  pid = -1;
}

// A named namespace and `sleep 30` running in it (ip netns exec keeps the pid), both removed on
// every way out of the test; a killed run's namespace is swept by the next run.
struct test_netns {
  std::string name = k_prefix + std::to_string(getpid());
  uint32_t inode = 0;
  pid_t sleeper = -1;

  test_netns() {
    testing::remove_orphan_netns(k_prefix);
    sh("ip netns del " + name + " 2>/dev/null");
    if (sh("ip netns add " + name) != 0)
      throw std::runtime_error("ip netns add " + name + " failed");
    inode = inode_of_path("/run/netns/" + name);
    sleeper = fork();
    if (sleeper == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      execlp("ip", "ip", "netns", "exec", name.c_str(), "sleep", "30", static_cast<char*>(nullptr));
      _exit(127);
    }
    // The pid exists before ip has entered the namespace: wait until it has.
    for (int i = 0; i < 400 && sleeper > 0; ++i) {
      if (netns_handle::inode_of_pid(sleeper) == inode)
        return;
      std::this_thread::sleep_for(5ms);
    }
    cleanup();
    throw std::runtime_error("the process never entered " + name);
  }
  ~test_netns() { cleanup(); }
  void cleanup() {
    stop_child(sleeper);
    sh("ip netns del " + name + " 2>/dev/null");
  }
};

// A child in the test's own namespace that unshares a new one when told to, so a test can
// learn its inode and then see it move.
struct mover {
  pid_t pid = -1;
  int go[2] = {-1, -1};
  int done[2] = {-1, -1};

  mover() {
    REQUIRE(pipe2(go, O_CLOEXEC) == 0);
    REQUIRE(pipe2(done, O_CLOEXEC) == 0);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      char c;
      if (read(go[0], &c, 1) != 1)
        _exit(1);
      const char ok = unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
      (void)!write(done[1], &ok, 1);
      for (;;)
        pause();
    }
  }
  bool move_now() {
    char c = 'g';
    if (write(go[1], &c, 1) != 1 || read(done[0], &c, 1) != 1)
      return false;
    return c == 'y';
  }
  ~mover() {
    stop_child(pid);
    for (int fd : {go[0], go[1], done[0], done[1]})
      if (fd >= 0)
        close(fd);
  }
};

} // namespace

TEST_CASE("netns kernel: the scan finds a process in a new namespace and its handle opens",
          "[kernel][netns]") {
  test_netns ns;
  REQUIRE(ns.inode != 0);
  const uint32_t own_inode = inode_of_path("/proc/self/ns/net");
  REQUIRE(ns.inode != own_inode);

  auto opened = proc_scanner::open();
  REQUIRE(std::holds_alternative<proc_scanner>(opened));
  auto& scanner = std::get<proc_scanner>(opened);
  std::optional<proc_process> found;
  size_t in_own_ns = 0;
  auto stats = scanner.scan({}, [&](const proc_process& p) {
    if (p.pid == ns.sleeper)
      found = p;
    in_own_ns += p.netns_inode == own_inode;
  });
  CHECK(stats.error.empty());
  REQUIRE(found);
  CHECK(found->netns_inode == ns.inode);
  CHECK((found->comm == "sleep" || found->comm == "ip")); // ip execs sleep in place
  CHECK(in_own_ns >= 1);
  CHECK(container_id_of(scanner, ns.sleeper).has_value());

  const size_t fds_before = open_fds();
  {
    netns_cache cache(8, 8, nullptr);
    auto h = netns_handle::open_for_pid(ns.sleeper, found->netns_inode);
    REQUIRE(std::holds_alternative<netns_handle>(h));
    auto& handle = std::get<netns_handle>(h);
    struct stat st {};
    REQUIRE(fstat(handle.fd(), &st) == 0);
    CHECK(static_cast<uint32_t>(st.st_ino) == ns.inode);
    CHECK(handle.inode() == ns.inode);

    REQUIRE(cache.queue_device(ns.inode, netns_device{1, "lo"}).queued);
    auto saved = cache.save_handle(std::move(handle), ns.sleeper);
    REQUIRE(saved.stored);
    CHECK(saved.dequeued.size() == 1);
    auto own = netns_handle::open_for_pid(getpid());
    REQUIRE(std::holds_alternative<netns_handle>(own));
    REQUIRE(cache.save_handle(std::move(std::get<netns_handle>(own)), getpid()).stored);
    CHECK(open_fds() == fds_before + 2);

    // The handle keeps the namespace after its process and its name are gone.
    const int fd = cache.fd_of(ns.inode);
    ns.cleanup();
    REQUIRE(fstat(fd, &st) == 0);
    CHECK(static_cast<uint32_t>(st.st_ino) == ns.inode);

    auto purged = cache.purge();
    CHECK(purged.size() == 2);
    CHECK(open_fds() == fds_before);
  }
  CHECK(open_fds() == fds_before);
}

TEST_CASE("netns kernel: find_netns reaches a namespace by its name, a process, or our own "
          "descriptor",
          "[kernel][netns]") {
  test_netns ns;
  REQUIRE(ns.inode != 0);
  const size_t fds_before = open_fds();
  {
    auto by_name = find_netns(ns.inode);
    REQUIRE(std::holds_alternative<netns_handle>(by_name));
    CHECK(std::get<netns_handle>(by_name).inode() == ns.inode);
    CHECK(std::get<netns_handle>(by_name).opened_from() == 0); // /run/netns/<name>

    std::get<netns_handle>(by_name).reset(); // else our own descriptor is found first
    netns_search_roots no_names{"/nonexistent-run-netns", "/proc"};
    auto by_process = find_netns(ns.inode, no_names);
    REQUIRE(std::holds_alternative<netns_handle>(by_process));
    CHECK(std::get<netns_handle>(by_process).opened_from() == ns.sleeper);

    // Its process and its name go; only the descriptor this process holds keeps it.
    std::get<netns_handle>(by_process).reset();
    auto held = netns_handle::open_for_pid(ns.sleeper, ns.inode);
    REQUIRE(std::holds_alternative<netns_handle>(held));
    ns.cleanup();
    auto by_fd = find_netns(ns.inode);
    REQUIRE(std::holds_alternative<netns_handle>(by_fd));
    const auto& h = std::get<netns_handle>(by_fd);
    CHECK(h.opened_from() == getpid());
    struct stat st {};
    REQUIRE(fstat(h.fd(), &st) == 0);
    CHECK(static_cast<uint32_t>(st.st_ino) == ns.inode);
    CHECK(std::holds_alternative<std::unordered_set<uint64_t>>(live_tcp_cookies_in(h.fd())));

    // Once nothing holds it, nothing reaches it, and the error says so.
    std::get<netns_handle>(held).reset();
    std::get<netns_handle>(by_fd).reset();
    auto gone = find_netns(ns.inode);
    REQUIRE(std::holds_alternative<netns_error>(gone));
    CHECK(std::get<netns_error>(gone).message.find(std::to_string(ns.inode)) != std::string::npos);
  }
  CHECK(open_fds() == fds_before);
}

TEST_CASE("netns kernel: a dead pid is refused with an error naming it", "[kernel][netns]") {
  test_netns ns;
  const pid_t pid = ns.sleeper;
  const uint32_t inode = netns_handle::inode_of_pid(pid);
  REQUIRE(inode == ns.inode);
  stop_child(ns.sleeper);
  const size_t fds_before = open_fds();
  auto check_refused = [pid](const std::variant<netns_handle, netns_error>& r) {
    REQUIRE(std::holds_alternative<netns_error>(r));
    const auto& e = std::get<netns_error>(r);
    CHECK(e.code == netns_errc::no_such_process);
    CHECK(e.message.find("pid " + std::to_string(pid)) != std::string::npos);
  };
  check_refused(netns_handle::open_for_pid(pid));
  check_refused(netns_handle::open_for_pid(pid, inode));
  CHECK(open_fds() == fds_before);
}

TEST_CASE("netns kernel: a process that moved since its inode was read is refused",
          "[kernel][netns]") {
  mover m;
  const uint32_t before = netns_handle::inode_of_pid(m.pid);
  REQUIRE(before == inode_of_path("/proc/self/ns/net"));
  REQUIRE(m.move_now());
  const uint32_t after = netns_handle::inode_of_pid(m.pid);
  REQUIRE(after != 0);
  REQUIRE(after != before);

  const size_t fds_before = open_fds();
  auto r = netns_handle::open_for_pid(m.pid, before);
  REQUIRE(std::holds_alternative<netns_error>(r));
  const auto& e = std::get<netns_error>(r);
  CHECK(e.code == netns_errc::inode_changed);
  CHECK(e.message.find(std::to_string(m.pid)) != std::string::npos);
  CHECK(open_fds() == fds_before);

  // Looked up afresh, the new namespace opens.
  auto fresh = netns_handle::open_for_pid(m.pid);
  REQUIRE(std::holds_alternative<netns_handle>(fresh));
  CHECK(std::get<netns_handle>(fresh).inode() == after);
}
