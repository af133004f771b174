// Process exec/exit events (bpf/proc_events) against real processes: a spawned child's exec and
// exit, the thread-group-leader rule for exits, hundreds of quick execs with nothing lost, the
// lost counter when the ring is full, a prompt stop that still delivers, no CO-RE relocation
// in the object, and nothing left in the kernel after destruction. Needs root.
// Tags: [kernel][proc_events].
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bpf/proc_events.hpp"
#include "proc_events.skel.h"
#include "tests/support/open_fds.hpp"

using netlens::testing::open_fds;

extern char** environ;

using namespace netlens;
using namespace std::chrono_literals;

namespace {

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// Every event the sink got, in order, and a way to wait for one.
struct collector {
  std::mutex m;
  std::condition_variable cv;
  std::vector<proc_event> events;
  std::function<void()> on_batch; // runs on the poll thread before the batch is stored

  proc_events::sink_fn sink() {
    return [this](std::vector<proc_event>&& batch) {
      if (on_batch)
        on_batch();
      std::lock_guard<std::mutex> lock(m);
      events.insert(events.end(), batch.begin(), batch.end());
      cv.notify_all();
    };
  }
  size_t count(proc_event::kind_t kind, pid_t pid) {
    std::lock_guard<std::mutex> lock(m);
    return size_t(std::count_if(events.begin(), events.end(), [&](const proc_event& e) {
      return e.kind == kind && e.pid == pid;
    }));
  }
  bool wait_for(proc_event::kind_t kind, pid_t pid, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(m);
    return cv.wait_for(lock, timeout, [&] {
      return std::any_of(events.begin(), events.end(),
                         [&](const proc_event& e) { return e.kind == kind && e.pid == pid; });
    });
  }
  // The first event of that kind and pid (the caller has waited for it).
  proc_event first(proc_event::kind_t kind, pid_t pid) {
    std::lock_guard<std::mutex> lock(m);
    for (const auto& e : events)
      if (e.kind == kind && e.pid == pid)
        return e;
    return proc_event{kind, 0, 0};
  }
  std::vector<proc_event> snapshot() {
    std::lock_guard<std::mutex> lock(m);
    return events;
  }
};

std::unique_ptr<proc_events> start_events(collector& c, proc_events_options opts = {}) {
  auto started = proc_events::start(opts, c.sink());
  if (auto* e = std::get_if<std::string>(&started))
    FAIL("starting proc_events: " << *e);
  return std::move(std::get<std::unique_ptr<proc_events>>(started));
}

pid_t spawn_true() {
  pid_t pid = -1;
  char arg0[] = "/bin/true";
  char* argv[] = {arg0, nullptr};
  if (posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ) != 0)
    return -1;
  return pid;
}

bool reap(pid_t pid) {
  int status = 0;
  return waitpid(pid, &status, 0) == pid;
}

// The thread a leader leaves behind: says its thread id on the pipe given, waits on the other,
// then ends the whole process (exit_group). Returning would end only this thread, and a process
// whose leader is gone lives on while any thread does: under TSan its runtime's own background
// thread would keep the process (and the test's waitpid) forever.
struct orphan_thread_fds {
  int report;
  int wait;
};
void* report_then_block(void* arg) {
  const auto* fds = static_cast<const orphan_thread_fds*>(arg);
  const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  (void)!write(fds->report, &tid, sizeof tid);
  char c;
  (void)!read(fds->wait, &c, 1);
  _exit(0);
}

// Kernel ids that still answer: a freed program or map no longer does.
bool prog_alive(uint32_t id) {
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd >= 0)
    close(fd);
  return fd >= 0;
}
bool map_alive(uint32_t id) {
  int fd = bpf_map_get_fd_by_id(id);
  if (fd >= 0)
    close(fd);
  return fd >= 0;
}
// Links (here the tracepoints' perf links) that run one of these programs.
size_t links_to(const std::vector<uint32_t>& prog_ids) {
  size_t n = 0;
  uint32_t id = 0;
  while (bpf_link_get_next_id(id, &id) == 0) {
    int fd = bpf_link_get_fd_by_id(id);
    if (fd < 0)
      continue;
    bpf_link_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
        std::find(prog_ids.begin(), prog_ids.end(), info.prog_id) != prog_ids.end())
      ++n;
    close(fd);
  }
  return n;
}

} // namespace

TEST_CASE("proc_events kernel: a child's exec and exit arrive within a second",
          "[kernel][proc_events]") {
  collector c;
  auto events = start_events(c);
  const uint64_t before = monotonic_ns();
  const pid_t child = spawn_true();
  REQUIRE(child > 0);
  REQUIRE(reap(child));
  const uint64_t reaped = monotonic_ns();
  CHECK(c.wait_for(proc_event::exec, child, 1s));
  CHECK(c.wait_for(proc_event::exit, child, 1s));
  const proc_event exec = c.first(proc_event::exec, child);
  const proc_event exit = c.first(proc_event::exit, child);
  CHECK(before <= exec.ktime_ns);
  CHECK(exec.ktime_ns <= exit.ktime_ns);
  CHECK(exit.ktime_ns <= reaped); // the exit is recorded before the parent can reap
  CHECK(c.count(proc_event::exec, child) == 1);
  CHECK(c.count(proc_event::exit, child) == 1);
  // The test process itself did not exit: its threads come and go without events.
  CHECK(c.count(proc_event::exit, getpid()) == 0);
  const auto s = events->stats();
  CHECK(s.lost == 0);
  CHECK(s.batches >= 1);
  CHECK(s.events >= 2);
}

TEST_CASE("proc_events kernel: only the thread-group leader's exit is an exit event",
          "[kernel][proc_events]") {
  // Each child is forked before the events' poll thread starts: a child forked from a process
  // with threads may only make async-signal-safe calls, and pthread_create is not one (under
  // ASan it deadlocked on a lock another parent thread held at the fork). The child then waits
  // for "S", sent once the events are followed, before it does what the section watches.
  collector c;
  std::unique_ptr<proc_events> events;
  int to_child[2], from_child[2];
  REQUIRE(pipe2(to_child, O_CLOEXEC) == 0);
  REQUIRE(pipe2(from_child, O_CLOEXEC) == 0);
  auto cleanup = [&] {
    for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]})
      if (fd >= 0)
        close(fd);
  };
  auto follow_then_release = [&] {
    events = start_events(c);
    REQUIRE(write(to_child[1], "S", 1) == 1);
  };
  auto wait_for_start = [&] {
    char s;
    if (read(to_child[0], &s, 1) != 1 || s != 'S')
      _exit(4);
  };

  SECTION("threads that exit before the leader send nothing; the leader's exit does") {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      wait_for_start();
      for (int i = 0; i < 3; ++i) {
        pthread_t t;
        if (pthread_create(
                &t, nullptr, [](void*) -> void* { return nullptr; }, nullptr) != 0 ||
            pthread_join(t, nullptr) != 0)
          _exit(2);
      }
      (void)!write(from_child[1], "T", 1); // the threads are gone
      char go;
      (void)!read(to_child[0], &go, 1);
      _exit(0);
    }
    follow_then_release();
    char done = 0;
    REQUIRE(read(from_child[0], &done, 1) == 1);
    std::this_thread::sleep_for(200ms); // a wrongly sent exit would have arrived by now
    CHECK(c.count(proc_event::exit, child) == 0);
    REQUIRE(write(to_child[1], "G", 1) == 1);
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(c.wait_for(proc_event::exit, child, 1s));
    std::this_thread::sleep_for(100ms);
    CHECK(c.count(proc_event::exit, child) == 1);
  }

  SECTION("a leader that leaves alone is reported then; the last thread's exit sends nothing") {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      wait_for_start();
      static orphan_thread_fds fds;
      fds = {from_child[1], to_child[0]};
      pthread_t t;
      if (pthread_create(&t, nullptr, report_then_block, &fds) != 0)
        _exit(2);
      syscall(SYS_exit, 0); // this thread only: the process lives on as t
    }
    follow_then_release();
    pid_t orphan = 0;
    REQUIRE(read(from_child[0], &orphan, sizeof orphan) == sizeof orphan);
    CHECK(orphan != child);
    CHECK(c.wait_for(proc_event::exit, child, 1s));
    // The process still runs: its other thread waits on the pipe. (Counted by its id: a
    // sanitizer runtime may have threads of its own there.)
    const std::string orphan_dir =
        "/proc/" + std::to_string(child) + "/task/" + std::to_string(orphan);
    CHECK(access(orphan_dir.c_str(), F_OK) == 0);
    REQUIRE(write(to_child[1], "G", 1) == 1);
    REQUIRE(waitpid(child, nullptr, 0) == child);
    std::this_thread::sleep_for(200ms);
    CHECK(c.count(proc_event::exit, child) == 1);
  }
  SECTION("a non-leader thread that execs: the old leader's exit comes first, then the exec") {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      wait_for_start();
      pthread_t t;
      if (pthread_create(
              &t, nullptr,
              [](void*) -> void* {
                char arg0[] = "/bin/true";
                char* argv[] = {arg0, nullptr};
                execve("/bin/true", argv, environ);
                _exit(3);
              },
              nullptr) != 0)
        _exit(2);
      for (;;)
        pause(); // the exec ends this thread
    }
    follow_then_release();
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WEXITSTATUS(status) == 0); // /bin/true ran, under the leader's pid
    REQUIRE(c.wait_for(proc_event::exec, child, 1s));
    std::this_thread::sleep_for(100ms);
    std::vector<proc_event::kind_t> seen;
    for (const auto& e : c.snapshot())
      if (e.pid == child)
        seen.push_back(e.kind);
    const std::vector<proc_event::kind_t> expected = {proc_event::exit, proc_event::exec,
                                                      proc_event::exit};
    CHECK(seen == expected);
  }
  cleanup();
}

TEST_CASE("proc_events kernel: 500 quick execs, every exec and exit seen, none lost",
          "[kernel][proc_events]") {
  collector c;
  auto events = start_events(c);
  std::vector<pid_t> children;
  // Waves of 50 at once: the ring fills faster than one child at a time would fill it.
  for (int wave = 0; wave < 10; ++wave) {
    std::vector<pid_t> running;
    for (int i = 0; i < 50; ++i) {
      const pid_t p = spawn_true();
      REQUIRE(p > 0);
      running.push_back(p);
    }
    for (pid_t p : running)
      REQUIRE(reap(p));
    children.insert(children.end(), running.begin(), running.end());
  }
  REQUIRE(children.size() == 500);
  const auto all_seen = [&] {
    std::set<pid_t> exec, exit;
    for (const auto& e : c.snapshot())
      (e.kind == proc_event::exec ? exec : exit).insert(e.pid);
    size_t missing = 0;
    for (pid_t p : children)
      missing += !exec.count(p) + !exit.count(p);
    return missing;
  };
  size_t missing = all_seen();
  for (int i = 0; i < 20 && missing != 0; ++i) {
    std::this_thread::sleep_for(50ms);
    missing = all_seen();
  }
  CHECK(missing == 0);
  const auto s = events->stats();
  CHECK(s.lost == 0);
  CHECK(s.events >= 1000);
  events->stop();
  CHECK(events->stats().events == c.snapshot().size());
}

TEST_CASE("proc_events kernel: a full ring counts what it drops and never blocks",
          "[kernel][proc_events]") {
  collector c;
  std::mutex gate_m;
  std::condition_variable gate_cv;
  bool open = false;
  // The first batch holds the poll thread until the children are done: the one-page ring
  // (about 170 records) overflows meanwhile.
  c.on_batch = [&] {
    std::unique_lock<std::mutex> lock(gate_m);
    gate_cv.wait_for(lock, 5s, [&] { return open; });
  };
  proc_events_options opts;
  opts.ring_bytes = 1000; // rounded up to one page
  auto events = start_events(c, opts);
  const pid_t first = spawn_true();
  REQUIRE(first > 0);
  REQUIRE(reap(first));
  std::vector<pid_t> children;
  for (int i = 0; i < 300; ++i) {
    const pid_t p = spawn_true();
    REQUIRE(p > 0);
    REQUIRE(reap(p)); // each exec finishes: the kernel side did not wait for the reader
    children.push_back(p);
  }
  {
    std::lock_guard<std::mutex> lock(gate_m);
    open = true;
  }
  gate_cv.notify_all();
  events->stop();
  const auto s = events->stats();
  CHECK(s.lost > 0);
  size_t seen = 0;
  for (const auto& e : c.snapshot())
    seen += std::find(children.begin(), children.end(), e.pid) != children.end();
  CHECK(seen < 2 * children.size());
  CHECK(seen + s.lost >= 2 * children.size()); // every record of ours is delivered or counted
}

TEST_CASE("proc_events kernel: stop is prompt, delivers what was written, and is idempotent",
          "[kernel][proc_events]") {
  collector c;
  auto events = start_events(c);
  std::this_thread::sleep_for(150ms); // the poll thread is asleep in poll()
  const pid_t child = spawn_true();
  REQUIRE(child > 0);
  REQUIRE(reap(child)); // both records are in the ring now
  const auto t0 = std::chrono::steady_clock::now();
  events->stop();
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < 50ms);
  CHECK(c.count(proc_event::exec, child) == 1);
  CHECK(c.count(proc_event::exit, child) == 1);
  const size_t delivered = c.snapshot().size();
  events->stop();
  // Nothing is delivered after stop.
  const pid_t later = spawn_true();
  REQUIRE(later > 0);
  REQUIRE(reap(later));
  std::this_thread::sleep_for(100ms);
  CHECK(c.snapshot().size() == delivered);
  const auto t1 = std::chrono::steady_clock::now();
  events.reset();
  // Destruction is slower than stop (~75 ms per tracepoint detached: an RCU grace period in the
  // kernel) but bounded.
  CHECK(std::chrono::steady_clock::now() - t1 < 2s);
}

TEST_CASE("proc_events kernel: nothing stays in the kernel after destruction",
          "[kernel][proc_events]") {
  const size_t fds_before = open_fds();
  collector c;
  auto events = start_events(c);
  const auto progs = events->program_ids();
  const auto maps = events->map_ids();
  REQUIRE(progs.size() == 2);
  for (uint32_t id : progs) {
    REQUIRE(id != 0);
    CHECK(prog_alive(id));
  }
  for (uint32_t id : maps) {
    REQUIRE(id != 0);
    CHECK(map_alive(id));
  }
  CHECK(links_to(progs) == 2);
  events.reset(); // without stop(): the destructor stops too
  // Programs go with their last reference; maps are freed from a work queue, shortly after.
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = std::none_of(progs.begin(), progs.end(), prog_alive) &&
           std::none_of(maps.begin(), maps.end(), map_alive);
    if (!gone)
      std::this_thread::sleep_for(20ms);
  }
  CHECK(gone);
  CHECK(links_to(progs) == 0);
  CHECK(open_fds() == fds_before);
}

TEST_CASE("proc_events kernel: the object has no CO-RE relocation (loads without kernel BTF)",
          "[kernel][proc_events]") {
  // With a target BTF that does not exist, libbpf fails the load of any object that has a
  // CO-RE relocation, and loads one that has none without ever reading it.
  size_t size = 0;
  const void* elf = nl_proc_events__elf_bytes(&size);
  LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = "nl_proc_events",
              .btf_custom_path = "/nonexistent/netlens-no-btf");
  bpf_object* obj = bpf_object__open_mem(elf, size, &opts);
  REQUIRE(obj);
  CHECK(bpf_object__load(obj) == 0);
  bpf_object__close(obj);
}
