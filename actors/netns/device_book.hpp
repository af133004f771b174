// Every device the rtnetlink watcher reported in each namespace, attached or not: the names of
// the devices the device-only flows were seen at, and what a complete link dump says is gone.
// No CAF: the netns actor tells it what the watcher read and acts on what it answers.
//
// The rule: a dump (the watcher's first read of a namespace, and its re-read after lost
// events) lists every device there; a device it did not list is gone, whatever events said.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace netlens {

class device_book {
public:
  // A dump of netns begins: what it lists from now is counted.
  void dump_begins(uint32_t netns);
  // The watcher reported the device (an event, or a dump's line).
  void seen(uint32_t netns, int32_t ifindex, const std::string& name);
  void removed(uint32_t netns, int32_t ifindex);
  // The dump of netns ended: the devices it listed, after forgetting the names of those it did
  // not. Nothing when no dump of netns was counted (nothing can be said to be gone).
  std::optional<std::unordered_set<int32_t>> dump_ends(uint32_t netns);
  // The namespace was let go: its names and its dump, if any, are forgotten.
  void forget(uint32_t netns);
  // The device's name, "" when it is unknown (gone, or never reported).
  std::string name_of(uint32_t netns, uint32_t ifindex) const;
  size_t size() const { return names_.size(); }
  void clear();

private:
  static uint64_t key(uint32_t netns, uint32_t ifindex) {
    return (uint64_t{netns} << 32) | ifindex;
  }
  std::unordered_map<uint64_t, std::string> names_;
  std::unordered_map<uint32_t, std::unordered_set<int32_t>> dumping_;
};

} // namespace netlens
