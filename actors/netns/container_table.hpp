// Which container each process is in, as its cgroup says (container_id), for the connections it
// made. No CAF: the netns actor asks it, the tick ages it, a unit test drives it.
//
// The rules:
// - a process found in a container keeps that answer while it lives (exec reads it again: the
//   pid may have been reused);
// - a process found in none is read again after recheck_ns: a runtime may move it into one
//   after its exec (a runtime that execs first, an operator's cgclassify);
// - a process that exited keeps its answer for idle_ns, so its connections that close late are
//   still attributed;
// - at most max_entries are kept; past that the entries without a container go first, then all.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>

namespace netlens {

class container_table {
public:
  // The container id of pid: "" for none, nullopt when the process is gone (nothing read).
  using reader = std::function<std::optional<std::string>(pid_t)>;

  container_table(reader read, size_t max_entries, uint64_t recheck_ns)
      : read_(std::move(read)), max_entries_(max_entries), recheck_ns_(recheck_ns) {}

  // The container of pid ("" for none or unknown), read when not known or due again.
  const std::string& of(pid_t pid, uint64_t now_ns);
  // pid exec'd: what was known of it is dropped. With read_now, it is read at once and kept
  // if it is in a container (a process that lives a few milliseconds is still attributed).
  void exec(pid_t pid, bool read_now, uint64_t now_ns);
  // pid exited: its answer is kept for expire's idle_ns from now.
  void exited(pid_t pid, uint64_t now_ns);
  // Drops the processes that exited at least idle_ns ago.
  void expire(uint64_t now_ns, uint64_t idle_ns);
  size_t size() const { return entries_.size(); }
  void clear() { entries_.clear(); }

private:
  struct entry {
    std::string id;         // "" when not in a container
    uint64_t exited_ns = 0; // 0 while the process lives
    uint64_t read_ns = 0;   // when its cgroup was read
  };
  void make_room();

  reader read_;
  size_t max_entries_;
  uint64_t recheck_ns_;
  std::unordered_map<pid_t, entry> entries_;
};

} // namespace netlens
