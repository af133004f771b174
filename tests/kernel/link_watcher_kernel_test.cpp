// The rtnetlink link watcher against real namespaces: the dump on add, veth pairs appearing,
// a rename, a device moved between two watched namespaces, deletes, ENOBUFS answered by a new
// dump, a namespace deleted while watched, the host's own namespace, and no socket left after
// stop(). Needs root. Tags: [kernel][link_watcher]. No packet is sent anywhere.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "actors/netns/link_watcher.hpp"
#include "tests/support/test_namespaces.hpp"

using namespace netlens;
using namespace std::chrono_literals;

using netlens::testing::test_namespaces;

namespace {

const std::string k_prefix = "nltest-lw-";

int sh(const std::string& cmd) {
  return std::system(cmd.c_str());
}

size_t open_socket_fds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d)
    return 0;
  while (dirent* e = readdir(d)) {
    char target[256] = {};
    std::string path = std::string("/proc/self/fd/") + e->d_name;
    ssize_t len = readlink(path.c_str(), target, sizeof target - 1);
    if (len > 0 && std::string(target, static_cast<size_t>(len)).rfind("socket:", 0) == 0)
      ++n;
  }
  closedir(d);
  return n;
}

uint32_t inode_of(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? static_cast<uint32_t>(st.st_ino) : 0;
}

// What the netns actor would keep: per namespace, the device table the batches describe, by
// the rule of link_batch (mark at dump_begins, sweep at dump_ends), plus every event in order.
struct ns_model {
  std::map<int32_t, std::string> devices;
  std::set<int32_t> seen;
  bool marking = false;
  int dumps_begun = 0;
  int dumps_ended = 0;
  std::vector<link_event> log;
};

struct collector {
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint32_t, ns_model> by_ns;
  // When set, the sink waits (holding up the poll thread) until released.
  bool hold = false;
  bool holding = false;

  link_watcher::sink_fn sink() {
    return [this](link_batch&& b) {
      std::unique_lock<std::mutex> lock(mu);
      if (hold) {
        holding = true;
        cv.notify_all();
        cv.wait(lock, [&] { return !hold; });
        holding = false;
      }
      ns_model& m = by_ns[b.netns];
      if (b.dump_begins) {
        m.marking = true;
        m.seen.clear();
        ++m.dumps_begun;
      }
      for (auto& ev : b.events) {
        if (ev.removed) {
          m.devices.erase(ev.ifindex);
          m.seen.erase(ev.ifindex);
        } else {
          m.devices[ev.ifindex] = ev.name;
          if (m.marking)
            m.seen.insert(ev.ifindex);
        }
        m.log.push_back(ev);
      }
      if (b.dump_ends) {
        for (auto it = m.devices.begin(); it != m.devices.end();)
          it = m.seen.count(it->first) ? std::next(it) : m.devices.erase(it);
        m.marking = false;
        ++m.dumps_ended;
      }
      cv.notify_all();
    };
  }

  // Waits until pred(model of ns) holds; false after the timeout.
  bool wait_for(uint32_t ns, const std::function<bool(const ns_model&)>& pred,
                std::chrono::milliseconds timeout = 5s) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, timeout, [&] { return pred(by_ns[ns]); });
  }
  ns_model model(uint32_t ns) {
    std::lock_guard<std::mutex> lock(mu);
    return by_ns[ns];
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu);
    hold = false;
    cv.notify_all();
  }
};

std::function<bool(const ns_model&)> has_device(int32_t ifindex, const std::string& name) {
  return [=](const ns_model& m) {
    auto it = m.devices.find(ifindex);
    return it != m.devices.end() && it->second == name;
  };
}
std::function<bool(const ns_model&)> lacks_device(int32_t ifindex) {
  return [=](const ns_model& m) { return m.devices.count(ifindex) == 0; };
}
std::function<bool(const ns_model&)> dumps_ended(int n) {
  return [=](const ns_model& m) { return m.dumps_ended >= n; };
}

// Whether the event log has an event for ifindex with that name and removal flag.
bool logged(const ns_model& m, int32_t ifindex, const std::string& name, bool removed) {
  for (const auto& ev : m.log)
    if (ev.ifindex == ifindex && ev.name == name && ev.removed == removed)
      return true;
  return false;
}

std::unique_ptr<link_watcher> start_watcher(collector& c, int rcvbuf = 0) {
  auto started = rcvbuf > 0 ? link_watcher::start(c.sink(), rcvbuf) : link_watcher::start(c.sink());
  if (auto* e = std::get_if<std::string>(&started))
    FAIL("starting the link watcher: " << *e);
  return std::move(std::get<std::unique_ptr<link_watcher>>(started));
}

void add_ns(link_watcher& w, uint32_t inode, int fd) {
  auto err = w.add(inode, fd);
  if (err)
    FAIL(*err);
}

std::string dump_of(const ns_model& m) {
  std::string s;
  for (const auto& [idx, name] : m.devices)
    s += std::to_string(idx) + ":" + name + " ";
  return s;
}

} // namespace

TEST_CASE("link watcher: dump, veth, rename, move between namespaces, delete",
          "[kernel][link_watcher]") {
  const size_t sockets_before = open_socket_fds();
  test_namespaces ns(k_prefix, {"a", "b"}, false);
  collector c;
  {
    auto w = start_watcher(c);
    const uint32_t a = ns.inode("a"), b = ns.inode("b");
    REQUIRE(a != 0);
    REQUIRE(b != 0);
    int fd_a = ns.fd("a");
    REQUIRE(fd_a >= 0);
    add_ns(*w, a, fd_a);
    close(fd_a); // the watcher does not need the fd after add

    // The dump lists lo, and only lo.
    REQUIRE(c.wait_for(a, dumps_ended(1)));
    {
      ns_model m = c.model(a);
      INFO(dump_of(m));
      REQUIRE(m.devices.size() == 1);
      CHECK(m.devices.begin()->first == 1);
      CHECK(m.devices.begin()->second == "lo");
      CHECK(m.dumps_begun == 1);
      REQUIRE(!m.log.empty());
      CHECK(m.log[0].dumped);
      CHECK(m.log[0].loopback);
    }

    // Adding it again changes nothing.
    int fd_again = ns.fd("a");
    CHECK_FALSE(w->add(a, fd_again).has_value());
    close(fd_again);
    CHECK(w->watched() == 1);

    // A veth pair inside a: both ends appear with the kernel's ifindex.
    ns.ip("a", "link add lwv0 type veth peer name lwv1");
    const int v0 = ns.ifindex("a", "lwv0"), v1 = ns.ifindex("a", "lwv1");
    REQUIRE(v0 > 1);
    REQUIRE(v1 > 1);
    CHECK(c.wait_for(a, has_device(v0, "lwv0")));
    CHECK(c.wait_for(a, has_device(v1, "lwv1")));
    {
      ns_model m = c.model(a);
      CHECK(logged(m, v0, "lwv0", false));
      CHECK_FALSE(m.log.back().dumped);
    }

    // Rename: same ifindex, new name.
    ns.ip("a", "link set lwv1 name lwr1");
    CHECK(c.wait_for(a, has_device(v1, "lwr1")));
    CHECK(ns.ifindex("a", "lwr1") == v1);

    // b watched too; lwr1 moves there: gone from a, new in b.
    int fd_b = ns.fd("b");
    REQUIRE(fd_b >= 0);
    add_ns(*w, b, fd_b);
    close(fd_b);
    REQUIRE(c.wait_for(b, dumps_ended(1)));
    CHECK(w->watched() == 2);
    ns.ip("a", "link set lwr1 netns " + ns.name("b"));
    const int moved = ns.ifindex("b", "lwr1");
    REQUIRE(moved > 0);
    CHECK(c.wait_for(a, lacks_device(v1)));
    CHECK(logged(c.model(a), v1, "lwr1", true));
    CHECK(c.wait_for(b, has_device(moved, "lwr1")));

    // Deleting lwv0 deletes its peer too, in the other namespace.
    ns.ip("a", "link del lwv0");
    CHECK(c.wait_for(a, lacks_device(v0)));
    CHECK(logged(c.model(a), v0, "lwv0", true));
    CHECK(c.wait_for(b, lacks_device(moved)));
    {
      ns_model ma = c.model(a), mb = c.model(b);
      INFO("a: " << dump_of(ma) << " b: " << dump_of(mb));
      CHECK(ma.devices.size() == 1);
      CHECK(mb.devices.size() == 1);
    }

    auto st = w->stats();
    CHECK(st.watched == 2);
    CHECK(st.dumps_completed >= 2);
    CHECK(st.malformed == 0);
    CHECK(st.errors == 0);
    CHECK(st.per_netns.size() == 2);

    // remove closes one socket; events of a no longer arrive.
    w->remove(a);
    CHECK(w->watched() == 1);
    const size_t log_a = c.model(a).log.size();
    ns.ip("a", "link add lwv2 type veth peer name lwv3");
    std::this_thread::sleep_for(300ms);
    CHECK(c.model(a).log.size() == log_a);

    w->stop();
    w->stop(); // idempotent
    CHECK(w->watched() == 0);
    CHECK(w->add(b, -1).has_value()); // refused once stopped
  }
  CHECK(open_socket_fds() == sockets_before);
}

TEST_CASE("link watcher: the host's own namespace lists lo", "[kernel][link_watcher]") {
  const size_t sockets_before = open_socket_fds();
  collector c;
  {
    auto w = start_watcher(c);
    const uint32_t self = inode_of("/proc/self/ns/net");
    REQUIRE(self != 0);
    add_ns(*w, self, -1);
    REQUIRE(c.wait_for(self, dumps_ended(1)));
    ns_model m = c.model(self);
    INFO(dump_of(m));
    auto lo = m.devices.find(1);
    REQUIRE(lo != m.devices.end());
    CHECK(lo->second == "lo");

    // The same namespace through an opened fd of /proc/self/ns/net, in a second watcher.
    collector c2;
    auto w2 = start_watcher(c2);
    int fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    add_ns(*w2, self, fd);
    close(fd);
    REQUIRE(c2.wait_for(self, dumps_ended(1)));
    CHECK(c2.model(self).devices.count(1) == 1);
  }
  CHECK(open_socket_fds() == sockets_before);
}

TEST_CASE("link watcher: an fd of another namespace than the inode said is refused",
          "[kernel][link_watcher]") {
  const size_t fds_before = open_socket_fds();
  test_namespaces ns(k_prefix, {"x"}, false);
  collector c;
  auto w = start_watcher(c);
  int fd = ns.fd("x");
  REQUIRE(fd >= 0);
  const uint32_t wrong = ns.inode("x") + 1;
  auto err = w->add(wrong, fd);
  close(fd);
  REQUIRE(err.has_value());
  CHECK(err->find(std::to_string(wrong)) != std::string::npos);
  CHECK(w->watched() == 0);

  // A closed fd: setns fails, and the error says so.
  auto err2 = w->add(77, 9999);
  REQUIRE(err2.has_value());
  CHECK(err2->find("77") != std::string::npos);
  CHECK(err2->find("setns") != std::string::npos);
  w->stop();
  CHECK(open_socket_fds() == fds_before);
}

TEST_CASE("link watcher: a namespace deleted while watched stays alive, quiet, until removed",
          "[kernel][link_watcher]") {
  test_namespaces ns(k_prefix, {"d"}, false);
  // A veth with one end in the host: when the namespace is really destroyed, the kernel
  // deletes its end, and the host end with it.
  const std::string host_end = "lwh" + std::to_string(getpid() % 100000);
  ns.host_devices.push_back(host_end);
  REQUIRE(sh("ip link add " + host_end + " type veth peer name lwd0 netns " + ns.name("d")) == 0);

  collector c;
  auto w = start_watcher(c);
  const uint32_t d = ns.inode("d");
  int fd = ns.fd("d");
  REQUIRE(fd >= 0);
  add_ns(*w, d, fd);
  close(fd);
  REQUIRE(c.wait_for(d, dumps_ended(1)));
  CHECK(c.model(d).devices.size() == 2);

  sh("ip netns del " + ns.name("d")); // (the fixture's own delete later finds nothing)
  // Nothing of ours refers to it but the watcher's socket: it keeps the namespace alive.
  std::this_thread::sleep_for(300ms);
  const auto before = w->stats();
  std::this_thread::sleep_for(500ms);
  const auto after = w->stats();
  CHECK(after.wakeups - before.wakeups <= 2); // no spin
  CHECK(after.watched == 1);
  REQUIRE(after.per_netns.size() == 1);
  CHECK_FALSE(after.per_netns[0].failed);
  CHECK(after.per_netns[0].errors == 0);
  CHECK(if_nametoindex(host_end.c_str()) != 0); // the namespace is still there

  // remove closes the last reference: the namespace is destroyed, and the host end goes.
  w->remove(d);
  CHECK(w->watched() == 0);
  CHECK(w->stats().per_netns.empty());
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = if_nametoindex(host_end.c_str()) == 0;
    if (!gone)
      std::this_thread::sleep_for(100ms);
  }
  CHECK(gone);
  const auto end = w->stats();
  CHECK(end.wakeups - after.wakeups <= 2);
}

TEST_CASE("link watcher: ENOBUFS is answered by a new dump that sets the table right",
          "[kernel][link_watcher]") {
  test_namespaces ns(k_prefix, {"e"}, false);
  collector c;
  // The smallest receive buffer the kernel allows: a few notifications fill it.
  auto w = start_watcher(c, 1);
  const uint32_t e = ns.inode("e");
  int fd = ns.fd("e");
  REQUIRE(fd >= 0);
  add_ns(*w, e, fd);
  close(fd);
  REQUIRE(c.wait_for(e, dumps_ended(1)));

  // Hold the poll thread in the sink while the kernel keeps notifying.
  {
    std::lock_guard<std::mutex> lock(c.mu);
    c.hold = true;
  }
  ns.ip("e", "link add lwe0 type veth peer name lwe1");
  {
    std::unique_lock<std::mutex> lock(c.mu);
    REQUIRE(c.cv.wait_for(lock, 5s, [&] { return c.holding; }));
  }
  for (int i = 1; i < 8; ++i)
    ns.ip("e", "link add lwe" + std::to_string(2 * i) + " type veth peer name lwe" +
                   std::to_string(2 * i + 1));
  ns.ip("e", "link del lwe0"); // and its peer: both must be gone from the table at the end
  c.release();

  std::vector<std::pair<int, std::string>> expected;
  for (int i = 2; i < 16; ++i) {
    const std::string dev = "lwe" + std::to_string(i);
    expected.emplace_back(ns.ifindex("e", dev), dev);
  }
  expected.emplace_back(1, "lo");
  auto table_is_right = [&](const ns_model& m) {
    if (m.devices.size() != expected.size())
      return false;
    for (const auto& [idx, name] : expected) {
      auto it = m.devices.find(idx);
      if (it == m.devices.end() || it->second != name)
        return false;
    }
    return !m.marking;
  };
  const bool right = c.wait_for(e, table_is_right, 10s);
  const auto st = w->stats();
  INFO("table: " << dump_of(c.model(e)) << "dumps begun " << c.model(e).dumps_begun << ", ended "
                 << c.model(e).dumps_ended << "; enobufs " << st.enobufs << ", interrupted "
                 << st.dumps_interrupted << ", errors " << st.errors << " "
                 << (st.per_netns.empty() ? "" : st.per_netns[0].last_error));
  CHECK(right);
  CHECK(st.enobufs >= 1);
  REQUIRE(st.per_netns.size() == 1);
  CHECK(st.per_netns[0].enobufs >= 1);
  CHECK(st.dumps_completed >= 2);
  CHECK(c.model(e).dumps_ended >= 2);
  CHECK(st.errors == 0);
}
