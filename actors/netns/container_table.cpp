#include "actors/netns/container_table.hpp"

namespace netlens {

const std::string& container_table::of(pid_t pid, uint64_t now_ns) {
  static const std::string none;
  auto it = entries_.find(pid);
  if (it != entries_.end() && (!it->second.id.empty() || it->second.exited_ns != 0 ||
                               now_ns - it->second.read_ns < recheck_ns_))
    return it->second.id;
  if (!read_ || pid <= 0)
    return none;
  auto id = read_(pid);
  if (!id)
    return it != entries_.end() ? it->second.id : none; // gone: keep what was known
  if (it != entries_.end()) {
    it->second.id = std::move(*id);
    it->second.read_ns = now_ns;
    return it->second.id;
  }
  make_room();
  return entries_.emplace(pid, entry{std::move(*id), 0, now_ns}).first->second.id;
}

void container_table::exec(pid_t pid, bool read_now, uint64_t now_ns) {
  entries_.erase(pid);
  if (!read_now || !read_)
    return;
  // Only a container found is kept: a process in none may yet be moved into one.
  if (auto id = read_(pid); id && !id->empty()) {
    make_room();
    entries_.emplace(pid, entry{std::move(*id), 0, now_ns});
  }
}

void container_table::exited(pid_t pid, uint64_t now_ns) {
  if (auto it = entries_.find(pid); it != entries_.end())
    it->second.exited_ns = now_ns;
}

void container_table::expire(uint64_t now_ns, uint64_t idle_ns) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    bool expired = it->second.exited_ns != 0 && now_ns - it->second.exited_ns >= idle_ns;
    it = expired ? entries_.erase(it) : std::next(it);
  }
}

void container_table::make_room() {
  if (entries_.size() < max_entries_)
    return;
  for (auto it = entries_.begin(); it != entries_.end();)
    it = it->second.id.empty() ? entries_.erase(it) : std::next(it);
  if (entries_.size() >= max_entries_)
    entries_.clear();
}

} // namespace netlens
