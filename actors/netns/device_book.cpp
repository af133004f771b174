#include "actors/netns/device_book.hpp"

namespace netlens {

void device_book::dump_begins(uint32_t netns) {
  dumping_[netns].clear();
}

void device_book::seen(uint32_t netns, int32_t ifindex, const std::string& name) {
  names_[key(netns, static_cast<uint32_t>(ifindex))] = name;
  if (auto it = dumping_.find(netns); it != dumping_.end())
    it->second.insert(ifindex);
}

void device_book::removed(uint32_t netns, int32_t ifindex) {
  names_.erase(key(netns, static_cast<uint32_t>(ifindex)));
}

std::optional<std::unordered_set<int32_t>> device_book::dump_ends(uint32_t netns) {
  auto it = dumping_.find(netns);
  if (it == dumping_.end())
    return std::nullopt;
  std::unordered_set<int32_t> listed = std::move(it->second);
  dumping_.erase(it);
  for (auto n = names_.begin(); n != names_.end();) {
    bool stale =
        (n->first >> 32) == netns && !listed.count(static_cast<int32_t>(n->first & 0xffffffffu));
    n = stale ? names_.erase(n) : std::next(n);
  }
  return listed;
}

void device_book::forget(uint32_t netns) {
  for (auto it = names_.begin(); it != names_.end();)
    it = (it->first >> 32) == netns ? names_.erase(it) : std::next(it);
  dumping_.erase(netns);
}

std::string device_book::name_of(uint32_t netns, uint32_t ifindex) const {
  auto it = names_.find(key(netns, ifindex));
  return it == names_.end() ? std::string() : it->second;
}

void device_book::clear() {
  names_.clear();
  dumping_.clear();
}

} // namespace netlens
