#include <catch2/catch.hpp>

#include <map>

#include "actors/netns/container_table.hpp"

using namespace netlens;

namespace {

constexpr uint64_t k_s = 1000000000ull;

// The processes as /proc would show them: pid -> container id ("" for none); a pid not listed
// is gone. reads counts each look at a process's cgroup.
struct fake_proc {
  std::map<pid_t, std::string> live;
  int reads = 0;
  container_table::reader reader() {
    return [this](pid_t pid) -> std::optional<std::string> {
      ++reads;
      auto it = live.find(pid);
      if (it == live.end())
        return std::nullopt;
      return it->second;
    };
  }
};

} // namespace

TEST_CASE("a process in a container keeps its answer, one in none is read again later",
          "[container_table]") {
  fake_proc procs;
  procs.live = {{10, "abc"}, {11, ""}};
  container_table t(procs.reader(), 100, 2 * k_s);
  CHECK(t.of(10, 1 * k_s) == "abc");
  CHECK(t.of(10, 50 * k_s) == "abc");
  CHECK(procs.reads == 1);

  CHECK(t.of(11, 1 * k_s).empty());
  procs.live[11] = "moved-in";      // a runtime moved it after its exec
  CHECK(t.of(11, 2 * k_s).empty()); // within the recheck time: not read again
  CHECK(t.of(11, 3 * k_s) == "moved-in");
  CHECK(procs.reads == 3);
}

TEST_CASE("an exited process keeps its container until it expires", "[container_table]") {
  fake_proc procs;
  procs.live = {{10, "abc"}};
  container_table t(procs.reader(), 100, 2 * k_s);
  CHECK(t.of(10, 1 * k_s) == "abc");
  procs.live.erase(10);
  t.exited(10, 5 * k_s);
  t.expire(30 * k_s, 30 * k_s);
  CHECK(t.of(10, 30 * k_s) == "abc"); // its late-closing connections are still attributed
  t.expire(35 * k_s, 30 * k_s);
  CHECK(t.size() == 0);
  CHECK(t.of(10, 36 * k_s).empty()); // gone, and nothing known
}

TEST_CASE("exec drops a reused pid's answer and keeps a fresh read only when in a container",
          "[container_table]") {
  fake_proc procs;
  procs.live = {{10, "old"}};
  container_table t(procs.reader(), 100, 2 * k_s);
  CHECK(t.of(10, 1 * k_s) == "old");
  procs.live[10] = "new"; // the pid was reused by a process in another container
  t.exec(10, true, 2 * k_s);
  int reads = procs.reads;
  CHECK(t.of(10, 2 * k_s) == "new");
  CHECK(procs.reads == reads); // read at the exec, kept

  procs.live[10] = "";
  t.exec(10, true, 3 * k_s);
  CHECK(t.size() == 0); // in none: not kept, it may yet be moved into one
  t.exec(10, false, 4 * k_s);
  CHECK(procs.reads == reads + 1); // read_now false: not read
}

TEST_CASE("past its bound the table drops the processes in no container first",
          "[container_table]") {
  fake_proc procs;
  for (pid_t p = 1; p <= 4; ++p)
    procs.live[p] = p % 2 ? "c" + std::to_string(p) : "";
  container_table t(procs.reader(), 4, 2 * k_s);
  for (pid_t p = 1; p <= 4; ++p)
    t.of(p, 1 * k_s);
  CHECK(t.size() == 4);
  procs.live[5] = "c5";
  CHECK(t.of(5, 1 * k_s) == "c5");
  CHECK(t.size() == 3); // 2 and 4 (no container) went; 1, 3 and 5 stay
  int reads = procs.reads;
  CHECK(t.of(1, 1 * k_s) == "c1");
  CHECK(procs.reads == reads);
}
