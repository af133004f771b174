// The netns rules without CAF and without root: the test process's own network namespace is
// the one found (the agent's own is given as another inode, so nothing keeps it alive), no TC
// classifiers and no device watcher, time from a fake clock.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "actors/netns/served_namespaces.hpp"
#include "tests/support/temp_dir.hpp"

using namespace netlens;

namespace {

constexpr uint64_t k_s = 1000000000ull;
constexpr uint32_t k_not_ours = 1; // stands for the agent's own namespace: no process is in it

// The truth: what the kernel says our namespace's inode is.
uint32_t our_inode() {
  struct stat st {};
  REQUIRE(stat("/proc/self/ns/net", &st) == 0);
  return static_cast<uint32_t>(st.st_ino);
}

uint32_t inode_of_fd(int fd) {
  struct stat st {};
  REQUIRE(fstat(fd, &st) == 0);
  return static_cast<uint32_t>(st.st_ino);
}

struct fixture {
  uint64_t now = 10 * k_s;
  std::vector<netns_joined> joined;
  std::vector<uint32_t> left;
  std::unique_ptr<served_namespaces> ns;

  explicit fixture(const std::string& proc_root = "/proc") {
    netns_config cfg;
    cfg.idle_flush_s = 5;
    auto scanner = proc_scanner::open(proc_root);
    REQUIRE(std::holds_alternative<proc_scanner>(scanner));
    namespace_feed feed;
    feed.joined = [this](netns_joined j) { joined.push_back(std::move(j)); };
    feed.left = [this](uint32_t inode) { left.push_back(inode); };
    ns = std::make_unique<served_namespaces>(cfg, k_not_ours,
                                             std::move(std::get<proc_scanner>(scanner)),
                                             std::move(feed), [this] { return now; });
  }

  uint64_t counter(const std::string& name) const {
    for (const auto& [k, v] : ns->counters())
      if (k == name)
        return v;
    FAIL("no counter " << name);
    return 0;
  }
};

} // namespace

TEST_CASE("a namespace found through a pid is handed over once, with a handle of its own",
          "[served_namespaces]") {
  fixture f;
  const uint32_t inode = our_inode();
  CHECK(f.ns->sync_pid(getpid(), 0) == inode);
  REQUIRE(f.joined.size() == 1);
  CHECK(f.joined[0].inode == inode);
  REQUIRE(f.joined[0].handle);
  REQUIRE(f.joined[0].handle->valid());
  CHECK(inode_of_fd(f.joined[0].handle->fd()) == inode);

  // Met again (another pid, an exec): known, nothing handed over twice.
  CHECK(f.ns->sync_pid(getpid(), inode) == inode);
  f.ns->exec(getpid());
  CHECK(f.joined.size() == 1);
  CHECK(f.counter("namespaces_found") == 1);
  CHECK(f.counter("exec_events") == 1);

  // A restarted conntrack asks for every one held: a duplicate, not the cache's own fd.
  auto held = f.ns->handles();
  REQUIRE(held.size() == 1);
  CHECK(held[0].inode == inode);
  CHECK(held[0].handle->fd() != f.joined[0].handle->fd());
  CHECK(inode_of_fd(held[0].handle->fd()) == inode);

  CHECK(f.ns->sync_pid(0, 0) == 0);
  CHECK(f.joined.size() == 1);
}

TEST_CASE("a namespace whose processes exited is let go after idle_flush_s, not before",
          "[served_namespaces]") {
  fixture f;
  const uint32_t inode = our_inode();
  REQUIRE(f.ns->sync_pid(getpid(), 0) == inode);

  // Its process still lives (as far as the rules know): kept however long it is idle.
  f.now += 60 * k_s;
  f.ns->tick(uint64_t{0});
  CHECK(f.left.empty());

  f.ns->exited(getpid());
  f.now += 4 * k_s;
  f.ns->tick(uint64_t{0});
  CHECK(f.left.empty());
  f.now += 2 * k_s;
  f.ns->tick(uint64_t{0}); // no event was lost: no rescan brings the pid back
  CHECK(f.left == std::vector<uint32_t>{inode});
  CHECK(f.counter("namespaces_released") == 1);
  CHECK(f.counter("namespaces") == 0);
  CHECK(f.ns->handles().empty());
}

// A /proc with the test process alone in it (its ns/net a link to the real one), so a rescan
// finds that one pid in our namespace and nothing else keeps the namespace.
struct proc_with_us_alone {
  testing::temp_dir dir{"nltest-served-"};
  std::string root = dir.path();
  proc_with_us_alone() {
    const std::string pid = std::to_string(getpid());
    REQUIRE(std::system(("mkdir -p " + root + "/" + pid + "/ns && ln -s /proc/" + pid + "/ns/net " +
                         root + "/" + pid + "/ns/net")
                            .c_str()) == 0);
  }
};

TEST_CASE("lost exec and exit events make the tick rescan /proc, once per idle_flush_s",
          "[served_namespaces]") {
  proc_with_us_alone proc;
  fixture f(proc.root);
  const uint32_t inode = our_inode();
  REQUIRE(f.ns->sync_pid(getpid(), 0) == inode);
  f.ns->exited(getpid()); // as if the exit of another process with our pid had been read
  f.now += 6 * k_s;
  f.ns->tick(uint64_t{3}); // three events lost: the scan finds the test process again
  CHECK(f.left.empty());
  CHECK(f.counter("scanned_processes") == 1);

  // Those losses are answered: the next tick does not scan, and the pid forgotten again goes.
  f.ns->exited(getpid());
  f.now += 6 * k_s;
  f.ns->tick(uint64_t{3});
  CHECK(f.left == std::vector<uint32_t>{inode});
}

TEST_CASE("devices are named from the watcher's batches, only in a namespace held",
          "[served_namespaces]") {
  fixture f;
  const uint32_t inode = our_inode();
  link_batch unknown;
  unknown.netns = 12345;
  unknown.events.push_back({12345, 2, "eth0"});
  f.ns->links(unknown);
  CHECK(f.counter("devices_known") == 0);

  REQUIRE(f.ns->sync_pid(getpid(), 0) == inode);
  link_batch b;
  b.netns = inode;
  b.events.push_back({inode, 2, "eth0"});
  b.events.push_back({inode, 3, "veth1"});
  f.ns->links(b);
  CHECK(f.counter("devices_known") == 2);
  link_batch gone;
  gone.netns = inode;
  gone.events.push_back({inode, 3, "veth1", true});
  f.ns->links(gone);
  CHECK(f.counter("devices_known") == 1);
  CHECK(f.counter("tc_attached") == 0); // no classifiers were handed in

  f.ns->exited(getpid());
  f.now += 6 * k_s;
  f.ns->tick(uint64_t{0});
  REQUIRE(f.left.size() == 1);
  CHECK(f.counter("devices_known") == 0); // forgotten with their namespace
}

TEST_CASE("a connection's namespace not met before is found when it is attributed",
          "[served_namespaces]") {
  fixture f;
  const uint32_t inode = our_inode();
  netns_resolve_request req;
  req.tuples.resize(2);
  req.tuples[0].netns = inode;
  req.tuples[1].netns = inode;
  req.pids = {static_cast<uint32_t>(getpid()), static_cast<uint32_t>(getpid())};

  f.ns->resolve(req, false); // stopped: only what is known is answered
  CHECK(f.joined.empty());

  f.ns->resolve(req, true);
  REQUIRE(f.joined.size() == 1);
  CHECK(f.joined[0].inode == inode);
  CHECK(f.counter("resolves") == 2);

  // A pid that does not live in the connection's namespace does not open it.
  fixture g;
  req.tuples[0].netns = inode + 1;
  req.tuples[1].netns = inode + 1;
  g.ns->resolve(req, true);
  CHECK(g.joined.empty());
}

TEST_CASE("a purge closes every handle and forgets the namespaces", "[served_namespaces]") {
  fixture f;
  REQUIRE(f.ns->sync_pid(getpid(), 0) != 0);
  auto held = f.ns->purge();
  CHECK(held.first == 0);  // no classifiers
  CHECK(held.second == 1); // one namespace
  CHECK(f.ns->handles().empty());
  CHECK(f.counter("open_handles") == 0);
}
