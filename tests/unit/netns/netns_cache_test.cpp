#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "actors/netns/netns_cache.hpp"

using namespace netlens;

namespace {

constexpr uint64_t k_s = 1'000'000'000ull;

struct fake_clock {
  uint64_t now = 1000 * k_s;
  netns_cache::clock_fn fn() {
    return [this] { return now; };
  }
};

// A real fd (on /dev/null) posing as the namespace inode: the cache only keys on the inode and
// closes the fd, which is what these tests watch.
netns_handle fake_handle(uint32_t inode, pid_t pid = 0) {
  const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  return netns_handle::adopt(fd, inode, pid);
}

bool fd_open(int fd) {
  return fcntl(fd, F_GETFD) != -1;
}

bool fd_closed(int fd) {
  return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

netns_device dev(int32_t ifindex, const char* name) {
  return netns_device{ifindex, name};
}

} // namespace

TEST_CASE("netns_cache holds at most its capacity and evicts the least recently seen",
          "[netns][netns_cache]") {
  fake_clock clk;
  netns_cache cache(3, 8, clk.fn());
  REQUIRE(cache.save_handle(fake_handle(101), 1).stored);
  clk.now += k_s;
  REQUIRE(cache.save_handle(fake_handle(102), 2).stored);
  clk.now += k_s;
  REQUIRE(cache.save_handle(fake_handle(103), 3).stored);
  const int fd101 = cache.fd_of(101);
  const int fd102 = cache.fd_of(102);
  REQUIRE(fd_open(fd101));

  // 101 is seen again, so 102 becomes the least recently seen.
  clk.now += k_s;
  REQUIRE(cache.note_pid(101, 11));
  REQUIRE(cache.queue_device(102, dev(5, "veth0")).ready);

  // ... but a device appearing in it counts as seeing it, so 103 is now the oldest.
  clk.now += k_s;
  auto r = cache.save_handle(fake_handle(104), 4);
  REQUIRE(r.stored);
  REQUIRE(cache.size() == 3);
  REQUIRE(r.evicted.size() == 1);
  CHECK(r.evicted[0].inode == 103);
  CHECK(r.evicted[0].had_handle);
  CHECK(r.evicted[0].pids == std::vector<pid_t>{3});
  CHECK_FALSE(cache.inode_of(3).has_value());
  CHECK(cache.fd_of(103) == -1);
  CHECK(cache.inodes() == std::vector<uint32_t>{104, 102, 101});

  clk.now += k_s;
  r = cache.save_handle(fake_handle(105), 5);
  REQUIRE(r.evicted.size() == 1);
  CHECK(r.evicted[0].inode == 101);
  CHECK(fd_closed(fd101));
  std::vector<pid_t> pids = r.evicted[0].pids;
  std::sort(pids.begin(), pids.end());
  CHECK(pids == std::vector<pid_t>{1, 11});

  // The evicted namespace's attached devices come back so their classifiers can be detached.
  clk.now += k_s;
  r = cache.save_handle(fake_handle(106), 6);
  REQUIRE(r.evicted.size() == 1);
  CHECK(r.evicted[0].inode == 102);
  CHECK(r.evicted[0].devices == std::vector<netns_device>{dev(5, "veth0")});
  CHECK(fd_closed(fd102));
  CHECK(cache.stats().evicted == 3);
  CHECK(cache.open_handles() == 3);
}

TEST_CASE("netns_cache eviction closes the fd of a handle opened by pid", "[netns][netns_cache]") {
  fake_clock clk;
  netns_cache cache(1, 8, clk.fn());
  auto h = netns_handle::open_for_pid(getpid());
  REQUIRE(std::holds_alternative<netns_handle>(h));
  const int fd = std::get<netns_handle>(h).fd();
  const uint32_t self_inode = std::get<netns_handle>(h).inode();
  REQUIRE(cache.save_handle(std::move(std::get<netns_handle>(h)), getpid()).stored);
  REQUIRE(cache.fd_of(self_inode) == fd);
  REQUIRE(fd_open(fd));
  auto r = cache.save_handle(fake_handle(self_inode + 1), 0);
  REQUIRE(r.evicted.size() == 1);
  CHECK(r.evicted[0].inode == self_inode);
  CHECK(fd_closed(fd));
}

TEST_CASE("netns_cache keeps the first handle of a namespace and closes a second one",
          "[netns][netns_cache]") {
  fake_clock clk;
  netns_cache cache(4, 8, clk.fn());
  REQUIRE(cache.save_handle(fake_handle(200), 1).stored);
  const int first = cache.fd_of(200);
  auto second = fake_handle(200);
  const int second_fd = second.fd();
  auto r = cache.save_handle(std::move(second), 2);
  CHECK_FALSE(r.stored);
  CHECK(cache.fd_of(200) == first);
  CHECK(fd_open(first));
  CHECK(fd_closed(second_fd));
  CHECK(cache.inode_of(2) == 200u);
  CHECK(cache.stats().handles_duplicate == 1);
  CHECK_FALSE(cache.save_handle(netns_handle{}, 3).stored);
  CHECK(cache.size() == 1);
}

TEST_CASE("netns_cache queues devices until the namespace's handle is saved",
          "[netns][netns_cache]") {
  fake_clock clk;
  netns_cache cache(4, 2, clk.fn());
  auto q = cache.queue_device(300, dev(2, "eth0"));
  CHECK(q.queued);
  CHECK_FALSE(q.ready);
  CHECK(cache.queue_device(300, dev(3, "eth1")).queued);
  // A rename of a queued device updates it rather than taking a second place.
  auto renamed = cache.queue_device(300, dev(3, "wan0"));
  CHECK(renamed.renamed);
  CHECK(renamed.queued);
  // The queue is bounded.
  CHECK_FALSE(cache.queue_device(300, dev(4, "eth2")).queued);
  CHECK(cache.stats().queue_overflows == 1);
  CHECK(cache.fd_of(300) == -1);
  REQUIRE(cache.info(300)->queued.size() == 2);

  // A queued device removed before the handle arrives is never handed out.
  CHECK_FALSE(cache.remove_device(300, 2).has_value());

  auto r = cache.save_handle(fake_handle(300), 7);
  REQUIRE(r.stored);
  CHECK(r.dequeued == std::vector<netns_device>{dev(3, "wan0")});
  auto info = cache.info(300);
  REQUIRE(info);
  CHECK(info->queued.empty());
  CHECK(info->devices == std::vector<netns_device>{dev(3, "wan0")});
  CHECK(info->fd >= 0);

  // With the handle held, a new device is ready at once and nothing waits.
  auto q2 = cache.queue_device(300, dev(9, "veth9"));
  CHECK(q2.ready);
  CHECK_FALSE(q2.queued);
  CHECK(cache.info(300)->queued.empty());
  // An attached device renamed stays attached: nothing to attach again.
  auto renamed_attached = cache.queue_device(300, dev(9, "veth9-new"));
  CHECK(renamed_attached.renamed);
  CHECK_FALSE(renamed_attached.ready);
  CHECK_FALSE(renamed_attached.queued);
  CHECK(cache.info(300)->devices == std::vector<netns_device>{dev(3, "wan0"), dev(9, "veth9-new")});
  // A second save dequeues nothing more.
  CHECK(cache.save_handle(fake_handle(300), 8).dequeued.empty());

  // Removing an attached device hands it back for detaching.
  auto gone = cache.remove_device(300, 3);
  REQUIRE(gone);
  CHECK(*gone == dev(3, "wan0"));
  CHECK(cache.info(300)->devices == std::vector<netns_device>{dev(9, "veth9-new")});
  CHECK_FALSE(cache.remove_device(300, 3).has_value());
  CHECK_FALSE(cache.remove_device(999, 3).has_value());
}

TEST_CASE("netns_cache evicting a namespace without handle reports its queued devices",
          "[netns][netns_cache]") {
  fake_clock clk;
  netns_cache cache(1, 4, clk.fn());
  REQUIRE(cache.queue_device(400, dev(2, "eth0")).queued);
  clk.now += k_s;
  auto r = cache.save_handle(fake_handle(401), 1);
  REQUIRE(r.evicted.size() == 1);
  CHECK(r.evicted[0].inode == 400);
  CHECK_FALSE(r.evicted[0].had_handle);
  CHECK(r.evicted[0].devices.empty());
  CHECK(r.evicted[0].queued == std::vector<netns_device>{dev(2, "eth0")});
}

TEST_CASE("netns_cache flushes namespaces with no pid and no device once idle long enough",
          "[netns][netns_cache]") {
  fake_clock clk;
  netns_cache cache(8, 4, clk.fn());
  const uint64_t idle = 30 * k_s;
  REQUIRE(cache.save_handle(fake_handle(500), 50).stored); // keeps its pid
  REQUIRE(cache.save_handle(fake_handle(501), 51).stored); // its pid exits
  REQUIRE(cache.save_handle(fake_handle(502), 0).stored);  // a device keeps it
  REQUIRE(cache.queue_device(502, dev(4, "br0")).ready);
  REQUIRE(cache.queue_device(503, dev(5, "eth0")).queued); // waits for a handle
  const int fd501 = cache.fd_of(501);

  clk.now += 10 * k_s;
  cache.forget_pid(51);
  CHECK_FALSE(cache.inode_of(51).has_value());

  // 501 became lonely 10 s in: not idle for 30 s until 40 s.
  CHECK(cache.flush_idle(clk.now + 29 * k_s, idle).empty());
  CHECK(fd_open(fd501));
  auto flushed = cache.flush_idle(clk.now + 30 * k_s, idle);
  REQUIRE(flushed.size() == 1);
  CHECK(flushed[0].inode == 501);
  CHECK(fd_closed(fd501));
  CHECK(cache.size() == 3);
  CHECK(cache.stats().flushed_idle == 1);

  // The device's removal makes 502 lonely; seen again at that moment.
  clk.now += 100 * k_s;
  REQUIRE(cache.remove_device(502, 4));
  CHECK(cache.flush_idle(clk.now + 10 * k_s, idle).empty());
  flushed = cache.flush_idle(clk.now + idle, idle);
  REQUIRE(flushed.size() == 1);
  CHECK(flushed[0].inode == 502);
  CHECK(cache.inode_of(50) == 500u);
  CHECK(cache.info(503).has_value());
}

TEST_CASE("netns_cache flushes namespaces without a process even when devices are attached",
          "[netns][netns_cache]") {
  fake_clock clk;
  netns_cache cache(8, 4, clk.fn());
  const uint64_t idle = 30 * k_s;
  REQUIRE(cache.save_handle(fake_handle(700), 70).stored); // a live process keeps it
  REQUIRE(cache.save_handle(fake_handle(701), 71).stored);
  REQUIRE(cache.queue_device(701, dev(2, "eth0")).ready);
  const int fd701 = cache.fd_of(701);
  clk.now += 5 * k_s;
  cache.forget_pid(71);
  // flush_idle keeps 701 for its device; this one does not, but only once idle long enough.
  CHECK(cache.flush_idle(clk.now + idle, idle).empty());
  CHECK(cache.flush_without_processes(clk.now + idle - 1, idle).empty());
  auto flushed = cache.flush_without_processes(clk.now + idle, idle);
  REQUIRE(flushed.size() == 1);
  CHECK(flushed[0].inode == 701);
  CHECK(flushed[0].devices == std::vector<netns_device>{dev(2, "eth0")});
  CHECK(fd_closed(fd701));
  CHECK(cache.inode_of(70) == 700u);
  CHECK(cache.size() == 1);
}

TEST_CASE("netns_cache follows a pid that changes namespace", "[netns][netns_cache]") {
  fake_clock clk;
  netns_cache cache(8, 4, clk.fn());
  REQUIRE(cache.save_handle(fake_handle(600), 60).stored);
  REQUIRE(cache.save_handle(fake_handle(601), 61).stored);
  CHECK_FALSE(cache.note_pid(999, 60)); // unknown namespace: the caller must open a handle
  CHECK(cache.inode_of(60) == 600u);
  REQUIRE(cache.note_pid(601, 60));
  CHECK(cache.inode_of(60) == 601u);
  CHECK(cache.info(600)->pids.empty());
  auto pids = cache.info(601)->pids;
  std::sort(pids.begin(), pids.end());
  CHECK(pids == std::vector<pid_t>{60, 61});
  clk.now += 5 * k_s;
  auto flushed = cache.flush_idle(clk.now, 5 * k_s);
  REQUIRE(flushed.size() == 1);
  CHECK(flushed[0].inode == 600);
}

TEST_CASE("netns_cache purge closes every handle", "[netns][netns_cache]") {
  fake_clock clk;
  netns_cache cache(16, 4, clk.fn());
  std::vector<int> fds;
  for (uint32_t i = 0; i < 10; ++i) {
    REQUIRE(cache.save_handle(fake_handle(700 + i), static_cast<pid_t>(70 + i)).stored);
    fds.push_back(cache.fd_of(700 + i));
  }
  REQUIRE(cache.queue_device(800, dev(1, "lo")).queued);
  REQUIRE(cache.open_handles() == 10);
  auto purged = cache.purge();
  CHECK(purged.size() == 11);
  CHECK(cache.size() == 0);
  CHECK(cache.open_handles() == 0);
  CHECK_FALSE(cache.inode_of(70).has_value());
  for (int fd : fds)
    CHECK(fd_closed(fd));
  CHECK(cache.stats().purged == 11);
  CHECK(cache.purge().empty());
}
