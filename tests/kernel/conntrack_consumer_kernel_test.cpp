// The conntrack netlink consumer against this kernel's conntrack, in a network namespace the
// test creates with a DNAT rule on loopback output: the initial dump, NEW and DESTROY events,
// a flush, ENOBUFS and its resync, the rate limit, stop and close, and the start errors.
// Needs root. Tags: [kernel][conntrack_consumer]. No packet leaves the test namespace.
#include <catch2/catch.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <functional>
#include <linux/capability.h>
#include <linux/netlink.h>
#include <mutex>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

#include "actors/conntrack/conntrack_consumer.hpp"
#include "tests/support/orphan_netns.hpp"

using namespace netlens;
using namespace std::chrono_literals;

namespace {

constexpr uint16_t k_front_port = 41001; // what clients connect to
constexpr uint16_t k_back_port = 41002;  // where the DNAT rule sends them

int sh(const std::string& cmd) {
  return std::system(cmd.c_str());
}

// A network namespace with loopback up and a DNAT rule on loopback output, removed on every
// way out of the test. A run killed before its destructor leaves its namespace behind: the
// next run removes those whose process is gone.
struct ct_netns {
  std::string name = "nltest-ct-" + std::to_string(getpid());
  int fd = -1;
  uint32_t inode = 0;

  ct_netns() {
    remove_orphans();
    sh("ip netns del " + name + " 2>/dev/null");
    if (sh("ip netns add " + name) != 0)
      throw std::runtime_error("ip netns add " + name + " failed");
    try {
      if (sh("ip -n " + name + " link set lo up") != 0)
        throw std::runtime_error("bringing lo up failed");
      const std::string rule = "ip nltest out tcp dport " + std::to_string(k_front_port) +
                               " dnat to 127.0.0.1:" + std::to_string(k_back_port);
      if (exec("nft add table ip nltest") != 0 ||
          exec("nft add chain ip nltest out '{ type nat hook output priority -100; }'") != 0 ||
          exec("nft add rule " + rule) != 0)
        throw std::runtime_error("installing the nft DNAT rule failed");
      fd = open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        throw std::runtime_error("opening the namespace failed");
      struct stat st {};
      fstat(fd, &st);
      inode = static_cast<uint32_t>(st.st_ino);
    } catch (...) {
      sh("ip netns del " + name + " 2>/dev/null");
      throw;
    }
  }
  ~ct_netns() {
    if (fd >= 0)
      close(fd);
    sh("ip netns del " + name + " 2>/dev/null");
  }
  int exec(const std::string& cmd) const { return sh("ip netns exec " + name + " " + cmd); }

  static void remove_orphans() { netlens::testing::remove_orphan_netns("nltest-ct-"); }
};

// Runs f on a thread that has entered the namespace: its sockets live there, and stay usable
// by every thread of the process afterwards. A failure is carried back to the test's thread.
void in_netns(int ns_fd, const std::function<void()>& f) {
  std::exception_ptr failure;
  std::thread t([&] {
    try {
      if (setns(ns_fd, CLONE_NEWNET) != 0)
        throw std::runtime_error(std::string("setns: ") + std::strerror(errno));
      f();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  t.join();
  if (failure)
    std::rethrow_exception(failure);
}

uint16_t local_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// A listener on the DNAT target inside the namespace, and the connections made to it through
// the rule. Closes everything it opened.
struct nat_traffic {
  int ns_fd;
  int listener = -1;
  std::vector<int> fds;

  explicit nat_traffic(int ns) : ns_fd(ns) {
    in_netns(ns_fd, [&] {
      listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in a = loopback(k_back_port);
      if (bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
          listen(listener, 4096) != 0)
        throw std::runtime_error(std::string("listener: ") + std::strerror(errno));
    });
  }
  ~nat_traffic() {
    for (int fd : fds)
      close(fd);
    if (listener >= 0)
      close(listener);
  }

  // n connections to the front port (translated to the back port); returns their client ports.
  std::vector<uint16_t> connect_n(int n, bool keep_open = true) {
    std::vector<uint16_t> ports;
    in_netns(ns_fd, [&] {
      for (int i = 0; i < n; ++i) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a = loopback(k_front_port);
        if (connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
          throw std::runtime_error(std::string("connect: ") + std::strerror(errno));
        int s = accept(listener, nullptr, nullptr);
        if (s < 0)
          throw std::runtime_error(std::string("accept: ") + std::strerror(errno));
        ports.push_back(local_port(c));
        if (keep_open) {
          fds.push_back(c);
          fds.push_back(s);
        } else {
          close(c);
          close(s);
        }
      }
    });
    return ports;
  }
};

// What the consumer handed over, for the test thread to wait on.
struct collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ct_event_batch> batches;
  std::function<void()> on_batch; // runs on the consumer thread, before the batch is stored

  conntrack_consumer::sink_fn sink() {
    return [this](ct_event_batch&& b) {
      if (on_batch)
        on_batch();
      std::lock_guard<std::mutex> lock(mu);
      batches.push_back(std::move(b));
      cv.notify_all();
    };
  }

  size_t count(ct_event_kind kind, uint16_t client_port) {
    std::lock_guard<std::mutex> lock(mu);
    return count_locked(kind, client_port);
  }
  size_t count_locked(ct_event_kind kind, uint16_t client_port) {
    size_t n = 0;
    for (const auto& b : batches)
      for (const auto& ev : b.events)
        if (ev.kind == kind && ev.entry.orig.sport == client_port)
          ++n;
    return n;
  }
  bool wait_for(ct_event_kind kind, uint16_t client_port, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, timeout, [&] { return count_locked(kind, client_port) > 0; });
  }
  const ct_event* find(ct_event_kind kind, uint16_t client_port) {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& b : batches)
      for (const auto& ev : b.events)
        if (ev.kind == kind && ev.entry.orig.sport == client_port)
          return &ev;
    return nullptr;
  }
  size_t batches_with(bool ct_event_batch::*flag) {
    std::lock_guard<std::mutex> lock(mu);
    size_t n = 0;
    for (const auto& b : batches)
      n += (b.*flag) ? 1 : 0;
    return n;
  }
};

// The conntrack netlink sockets this process holds (in any namespace).
int netfilter_sockets() {
  int n = 0;
  DIR* dir = opendir("/proc/self/fd");
  REQUIRE(dir);
  while (dirent* e = readdir(dir)) {
    int fd = std::atoi(e->d_name);
    if (e->d_name[0] == '.' || fd == dirfd(dir))
      continue;
    int domain = 0, protocol = -1;
    socklen_t len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_NETLINK)
      continue;
    len = sizeof protocol;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 &&
        protocol == NETLINK_NETFILTER)
      ++n;
  }
  closedir(dir);
  return n;
}

conntrack_consumer_options options_for(const ct_netns& ns) {
  conntrack_consumer_options o;
  o.netns_fd = ns.fd;
  o.netns_inode = ns.inode;
  o.dump_timeout_ms = 5000;
  return o;
}

std::unique_ptr<conntrack_consumer> start_or_fail(const conntrack_consumer_options& o,
                                                  collector& col) {
  auto started = conntrack_consumer::start(o, col.sink());
  if (auto* err = std::get_if<std::string>(&started))
    FAIL("start: " << *err);
  return std::move(std::get<0>(started));
}

// Drops CAP_NET_ADMIN from the calling thread only (capabilities are per thread, and a thread
// it creates inherits its set).
void drop_net_admin_on_this_thread() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &hdr, data) != 0)
    throw std::runtime_error("capget");
  data[CAP_NET_ADMIN / 32].effective &= ~(1u << (CAP_NET_ADMIN % 32));
  data[CAP_NET_ADMIN / 32].permitted &= ~(1u << (CAP_NET_ADMIN % 32));
  if (syscall(SYS_capset, &hdr, data) != 0)
    throw std::runtime_error("capset");
}

} // namespace

TEST_CASE("kernel: a NAT'd connection is found by the dump, a new one as created, its "
          "deletion as destroyed",
          "[kernel][conntrack_consumer]") {
  ct_netns ns;
  nat_traffic traffic(ns.fd);
  const uint16_t before = traffic.connect_n(1)[0];
  const int sockets_before = netfilter_sockets();

  collector col;
  auto consumer = start_or_fail(options_for(ns), col);
  CHECK(netfilter_sockets() == sockets_before + 2); // events and dumps
  CHECK(consumer->thread_id() > 0);
  REQUIRE(consumer->wait_initial_dump(5s) == initial_dump_result::done);

  // The dump: one begin, one end, and the connection made before start in between.
  CHECK(col.batches_with(&ct_event_batch::dump_begins) == 1);
  CHECK(col.batches_with(&ct_event_batch::dump_ends) == 1);
  const ct_event* dumped = col.find(ct_event_kind::dumped, before);
  REQUIRE(dumped);
  CHECK(dumped->entry.netns == ns.inode);
  CHECK(dumped->entry.family == AF_INET);
  CHECK(dumped->entry.protocol == IPPROTO_TCP);
  CHECK(dumped->entry.orig.dport == k_front_port);
  CHECK(dumped->entry.reply.sport == k_back_port); // the translation
  CHECK(dumped->entry.reply.dport == before);
  CHECK(has_nat(dumped->entry));
  {
    std::lock_guard<std::mutex> lock(col.mu);
    CHECK(col.batches.front().dump_begins);
    CHECK(col.batches.front().netns == ns.inode);
  }

  // A connection after start arrives as a NEW event.
  const uint16_t after = traffic.connect_n(1)[0];
  REQUIRE(col.wait_for(ct_event_kind::created, after, 5s));
  const ct_event* created = col.find(ct_event_kind::created, after);
  CHECK(created->entry.reply.sport == k_back_port);
  CHECK(has_nat(created->entry));

  // Deleting its entry arrives as a DESTROY event.
  REQUIRE(ns.exec("conntrack -D -p tcp --orig-port-src " + std::to_string(after) +
                  " >/dev/null 2>&1") == 0);
  REQUIRE(col.wait_for(ct_event_kind::destroyed, after, 5s));
  CHECK(col.count(ct_event_kind::created, after) == 1);

  auto s = consumer->stats();
  CHECK(s.state == consumer_state::following);
  CHECK(s.dumps_completed == 1);
  CHECK(s.dumps_failed == 0);
  CHECK(s.dumped_entries >= 1);
  CHECK(s.enobufs == 0);
  CHECK(s.malformed == 0);
  CHECK(s.events >= 2);
  CHECK(s.events_kept == s.events);
  CHECK(s.receive_buffer_bytes >= (8u << 20)); // SO_RCVBUFFORCE got past rmem_max

  auto t0 = std::chrono::steady_clock::now();
  consumer->stop();
  auto stop_took = std::chrono::steady_clock::now() - t0;
  CHECK(stop_took < 200ms); // the eventfd wakes it, no poll timeout is waited out
  CHECK(consumer->stats().state == consumer_state::stopped);
  CHECK(consumer->thread_id() == 0);
  CHECK(netfilter_sockets() == sockets_before + 2); // stop leaves the sockets to close()
  consumer->close();
  CHECK(consumer->stats().state == consumer_state::closed);
  CHECK(netfilter_sockets() == sockets_before);
  consumer->close(); // idempotent
  consumer->stop();
}

TEST_CASE("kernel: a sync batch comes after every event queued before it was asked for",
          "[kernel][conntrack_consumer]") {
  ct_netns ns;
  nat_traffic traffic(ns.fd);
  collector col;
  // The thread lags behind (each batch takes it 20 ms) once slow is set: the NEW events of a
  // burst of connections are still queued on its socket when the sync is asked for. The hook
  // is in place before the thread starts; only the atomic changes while it runs.
  std::atomic<bool> slow{false};
  col.on_batch = [&] {
    if (slow.load())
      std::this_thread::sleep_for(20ms);
  };
  auto consumer = start_or_fail(options_for(ns), col);
  REQUIRE(consumer->wait_initial_dump(5s) == initial_dump_result::done);
  slow = true;
  std::vector<uint16_t> ports;
  for (int round = 0; round < 10; ++round)
    for (uint16_t p : traffic.connect_n(20, false))
      ports.push_back(p);
  size_t at_request = 0;
  {
    std::lock_guard<std::mutex> lock(col.mu);
    for (const auto& b : col.batches)
      for (const auto& ev : b.events)
        at_request += ev.kind == ct_event_kind::created ? 1 : 0;
  }
  const uint64_t seq = consumer->request_sync();
  REQUIRE(seq > 0);
  INFO("NEW events handed over when the sync was asked for: " << at_request << " of "
                                                              << ports.size());
  CHECK(at_request < ports.size()); // else this test proves nothing: the thread did not lag

  // When the sync batch is handed over, every connection's NEW event is in an earlier batch.
  size_t before_sync = 0;
  bool synced = false;
  {
    std::unique_lock<std::mutex> lock(col.mu);
    synced = col.cv.wait_for(lock, 10s, [&] {
      for (const auto& b : col.batches)
        if (b.sync >= seq)
          return true;
      return false;
    });
    if (synced) {
      for (const auto& b : col.batches) {
        if (b.sync >= seq) {
          CHECK(b.events.empty());
          CHECK(b.netns == ns.inode);
          break;
        }
        for (const auto& ev : b.events)
          if (ev.kind == ct_event_kind::created &&
              std::find(ports.begin(), ports.end(), ev.entry.orig.sport) != ports.end())
            ++before_sync;
      }
    }
  }
  slow = false;
  REQUIRE(synced);
  CHECK(before_sync == ports.size());

  // Stopped, it promises nothing more.
  consumer->stop();
  CHECK(consumer->stats().syncs >= 1);
  CHECK(consumer->request_sync() == 0);
}

TEST_CASE("kernel: a table flush arrives as destroy events and the consumer follows on",
          "[kernel][conntrack_consumer]") {
  ct_netns ns;
  nat_traffic traffic(ns.fd);
  const uint16_t before = traffic.connect_n(1)[0];
  collector col;
  auto consumer = start_or_fail(options_for(ns), col);
  REQUIRE(consumer->wait_initial_dump(5s) == initial_dump_result::done);
  REQUIRE(col.find(ct_event_kind::dumped, before));

  auto ports = traffic.connect_n(20);
  for (auto p : ports)
    REQUIRE(col.wait_for(ct_event_kind::created, p, 5s));
  REQUIRE(ns.exec("conntrack -F >/dev/null 2>&1") == 0);
  for (auto p : ports) {
    INFO("client port " << p);
    CHECK(col.wait_for(ct_event_kind::destroyed, p, 5s));
  }
  // With net.netfilter.nf_conntrack_events = 2 an entry gets its event extension only if some
  // ctnetlink listener existed on the host when it was made: then its destruction is never
  // announced (another listener on the host, e.g. a conntrack -E, changes that).
  if (!col.wait_for(ct_event_kind::destroyed, before, 200ms))
    WARN("no DESTROY for the entry created before any event listener (nf_conntrack_events = 2)");

  // The flushed table is followed as before.
  const uint16_t later = traffic.connect_n(1)[0];
  CHECK(col.wait_for(ct_event_kind::created, later, 5s));
  auto s = consumer->stats();
  CHECK(s.state == consumer_state::following);
  CHECK(s.malformed == 0);
  CHECK(s.enobufs == 0);
}

TEST_CASE("kernel: ENOBUFS is counted and answered by a resync dump",
          "[kernel][conntrack_consumer]") {
  ct_netns ns;
  nat_traffic traffic(ns.fd);
  collector col;
  // The sink stalls on the first event batch while a burst of events arrives: the smallest
  // receive buffer the kernel allows overflows.
  std::atomic<bool> stall{false};
  std::atomic<bool> stalled{false};
  col.on_batch = [&] {
    if (stall.exchange(false)) {
      stalled = true;
      std::this_thread::sleep_for(500ms);
    }
  };
  auto o = options_for(ns);
  o.receive_buffer_bytes = 1; // the kernel rounds up to its minimum
  const int sockets_before = netfilter_sockets();
  auto consumer = start_or_fail(o, col);
  REQUIRE(consumer->wait_initial_dump(5s) == initial_dump_result::done);

  stall = true;
  traffic.connect_n(1);
  for (int i = 0; i < 200 && !stalled; ++i)
    std::this_thread::sleep_for(5ms);
  REQUIRE(stalled);
  auto burst = traffic.connect_n(300); // while the consumer sleeps in the sink

  // After the stall: ENOBUFS, then a second dump that lists the burst's entries.
  bool resynced = false;
  for (int i = 0; i < 500 && !resynced; ++i) {
    auto s = consumer->stats();
    resynced = s.enobufs >= 1 && s.dumps_completed >= 2;
    if (!resynced)
      std::this_thread::sleep_for(10ms);
  }
  auto s = consumer->stats();
  INFO("enobufs " << s.enobufs << ", resyncs " << s.resyncs << ", dumps " << s.dumps_completed
                  << ", receive buffer " << s.receive_buffer_bytes);
  REQUIRE(resynced);
  CHECK(s.resyncs >= 1);
  CHECK(s.dumps_failed == 0);
  CHECK(s.state == consumer_state::following);
  CHECK(col.batches_with(&ct_event_batch::dump_begins) ==
        col.batches_with(&ct_event_batch::dump_ends));
  CHECK(col.batches_with(&ct_event_batch::dump_ends) >= 2);
  // The event socket was renewed (its queue was older than the resync); the old one is closed.
  CHECK(netfilter_sockets() == sockets_before + 2);
  // Every entry of the burst is known, from its event or from the resync (the mark-and-sweep
  // of the cache relies on that).
  for (auto p : burst) {
    INFO("client port " << p);
    CHECK(col.count(ct_event_kind::created, p) + col.count(ct_event_kind::dumped, p) >= 1);
  }
}

TEST_CASE("kernel: a dump past its timeout degrades the consumer, which follows events and "
          "retries the dump",
          "[kernel][conntrack_consumer]") {
  ct_netns ns;
  nat_traffic traffic(ns.fd);
  traffic.connect_n(400); // a table the kernel dumps in several parts
  collector col;
  std::atomic<bool> stall{true};
  col.on_batch = [&] {
    if (stall.exchange(false))
      std::this_thread::sleep_for(300ms); // the first dump batch: the dump overruns
  };
  auto o = options_for(ns);
  o.dump_timeout_ms = 100;
  o.dump_retry_ms = 300;
  o.batch_max_events = 16;
  auto consumer = start_or_fail(o, col);
  REQUIRE(consumer->wait_initial_dump(5s) == initial_dump_result::timed_out);
  auto s = consumer->stats();
  CHECK(s.state == consumer_state::degraded);
  CHECK(s.degraded_reason.find("did not finish within 100 ms") != std::string::npos);
  CHECK(s.dumps_failed == 1);

  // Degraded, it still follows the events.
  const uint16_t during = traffic.connect_n(1)[0];
  CHECK(col.wait_for(ct_event_kind::created, during, 5s));

  // The retry completes.
  for (int i = 0; i < 300 && consumer->stats().dumps_completed == 0; ++i)
    std::this_thread::sleep_for(10ms);
  s = consumer->stats();
  CHECK(s.dumps_completed == 1);
  CHECK(s.resyncs >= 1);
  CHECK(s.state == consumer_state::following);
  CHECK(s.degraded_reason.empty());
  CHECK(s.dumped_entries >= 400);
  // The abandoned dump began and never ended: no sweep for it.
  CHECK(col.batches_with(&ct_event_batch::dump_begins) == 2);
  CHECK(col.batches_with(&ct_event_batch::dump_ends) == 1);
}

TEST_CASE("kernel: above the rate limit new entries are sampled, destroys are all kept",
          "[kernel][conntrack_consumer]") {
  ct_netns ns;
  nat_traffic traffic(ns.fd);
  collector col;
  auto o = options_for(ns);
  o.rate_limit = 5;
  auto consumer = start_or_fail(o, col);
  REQUIRE(consumer->wait_initial_dump(5s) == initial_dump_result::done);

  auto ports = traffic.connect_n(60);
  REQUIRE(ns.exec("conntrack -F >/dev/null 2>&1") == 0);
  for (auto p : ports)
    CHECK(col.wait_for(ct_event_kind::destroyed, p, 5s));
  auto s = consumer->stats();
  size_t created = 0;
  for (auto p : ports)
    created += col.count(ct_event_kind::created, p);
  INFO("created kept " << created << ", sampled out " << s.sampled_out);
  CHECK(created <= 10); // at most the limit per one-second window (the burst may span two)
  CHECK(s.sampled_out >= 50);
  CHECK(s.events == s.events_kept + s.sampled_out);
}

TEST_CASE("kernel: start errors name the cause and leave nothing open",
          "[kernel][conntrack_consumer]") {
  ct_netns ns;
  const int sockets_before = netfilter_sockets();
  collector col;

  SECTION("an fd that is not a network namespace") {
    int not_ns = open("/dev/null", O_RDONLY | O_CLOEXEC);
    REQUIRE(not_ns >= 0);
    auto o = options_for(ns);
    o.netns_fd = not_ns;
    auto started = conntrack_consumer::start(o, col.sink());
    close(not_ns);
    REQUIRE(std::holds_alternative<std::string>(started));
    const std::string& err = std::get<std::string>(started);
    INFO(err);
    CHECK(err.find("network namespace") != std::string::npos);
    CHECK(err.find("Invalid argument") != std::string::npos);
  }
  SECTION("a closed fd") {
    auto o = options_for(ns);
    o.netns_fd = 1 << 20;
    auto started = conntrack_consumer::start(o, col.sink());
    REQUIRE(std::holds_alternative<std::string>(started));
    INFO(std::get<std::string>(started));
    CHECK(std::get<std::string>(started).find("Bad file descriptor") != std::string::npos);
  }
  SECTION("without CAP_NET_ADMIN") {
    std::variant<std::unique_ptr<conntrack_consumer>, std::string> started;
    std::string setup_error;
    std::thread unprivileged([&] {
      try {
        drop_net_admin_on_this_thread();
        started = conntrack_consumer::start(options_for(ns), col.sink());
      } catch (const std::exception& e) {
        setup_error = e.what();
      }
    });
    unprivileged.join();
    REQUIRE(setup_error.empty());
    REQUIRE(std::holds_alternative<std::string>(started));
    const std::string& err = std::get<std::string>(started);
    INFO(err);
    CHECK(err.find("CAP_NET_ADMIN") != std::string::npos);
    CHECK(err.find("Operation not permitted") != std::string::npos);
  }
  CHECK(netfilter_sockets() == sockets_before);
  CHECK(col.batches.empty());
}
