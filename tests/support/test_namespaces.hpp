// Network namespaces a kernel test builds: PREFIX<pid><tag> under /run/netns, plus host devices
// it adds, deleted on every way out of the test (and those of a killed run swept by the next,
// see orphan_netns.hpp). Shared by the TC and link watcher kernel tests.
#pragma once

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/orphan_netns.hpp"

namespace netlens::testing {

// Runs f on a thread inside the namespace /run/netns/NAME; sockets f creates stay there.
inline void in_netns(const std::string& name, const std::function<void()>& f) {
  const int ns = open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0)
    throw std::runtime_error("cannot open netns " + name);
  bool entered = false;
  std::thread t([&] {
    entered = setns(ns, CLONE_NEWNET) == 0;
    if (entered)
      f();
  });
  t.join();
  close(ns);
  if (!entered)
    throw std::runtime_error("cannot enter netns " + name);
}

class test_namespaces {
public:
  // Makes one namespace per tag (lo up in each when asked); throws if one cannot be made.
  test_namespaces(std::string prefix, const std::vector<std::string>& tags, bool lo_up)
      : prefix_(std::move(prefix)) {
    remove_orphan_netns(prefix_);
    for (const auto& tag : tags) {
      const std::string n = name(tag);
      shell("ip netns del " + n + " 2>/dev/null");
      if (shell("ip netns add " + n) != 0) {
        cleanup();
        throw std::runtime_error("ip netns add " + n + " failed");
      }
      names_.push_back(n);
      if (lo_up)
        ip(tag, "link set lo up");
    }
  }
  ~test_namespaces() { cleanup(); }
  test_namespaces(const test_namespaces&) = delete;
  test_namespaces& operator=(const test_namespaces&) = delete;

  // Host devices the test added; deleted before the namespaces.
  std::vector<std::string> host_devices;

  void cleanup() {
    for (const auto& d : host_devices)
      shell("ip link del " + d + " 2>/dev/null");
    host_devices.clear();
    for (const auto& n : names_)
      shell("ip netns del " + n + " 2>/dev/null");
    names_.clear();
  }
  std::string name(const std::string& tag) const {
    return prefix_ + std::to_string(getpid()) + tag;
  }
  // `ip netns exec NAME cmd`; throws if it fails.
  void exec(const std::string& tag, const std::string& cmd) {
    must("ip netns exec " + name(tag) + " " + cmd);
  }
  // `ip -n NAME args`; throws if it fails.
  void ip(const std::string& tag, const std::string& args) {
    must("ip -n " + name(tag) + " " + args);
  }
  // What `ip netns exec NAME cmd` prints, stderr included.
  std::string output(const std::string& tag, const std::string& cmd) const {
    std::string out;
    FILE* p = popen(("ip netns exec " + name(tag) + " " + cmd + " 2>&1").c_str(), "r");
    if (!p)
      return out;
    char buf[512];
    while (size_t n = fread(buf, 1, sizeof buf, p))
      out.append(buf, n);
    pclose(p);
    return out;
  }
  // A veth pair with one end in each namespace, both up.
  void veth(const std::string& tag_a, const std::string& dev_a, const std::string& tag_b,
            const std::string& dev_b) {
    if (shell("ip link add " + dev_a + " netns " + name(tag_a) + " type veth peer name " + dev_b +
              " netns " + name(tag_b)) != 0)
      throw std::runtime_error("cannot create veth " + dev_a + "/" + dev_b);
    ip(tag_a, "link set " + dev_a + " up");
    ip(tag_b, "link set " + dev_b + " up");
  }
  int fd(const std::string& tag) const {
    return open(("/run/netns/" + name(tag)).c_str(), O_RDONLY | O_CLOEXEC);
  }
  uint32_t inode(const std::string& tag) const {
    struct stat st {};
    return stat(("/run/netns/" + name(tag)).c_str(), &st) == 0 ? static_cast<uint32_t>(st.st_ino)
                                                               : 0;
  }
  // The device's index inside the namespace, 0 if it has none.
  int ifindex(const std::string& tag, const std::string& dev) const {
    int idx = 0;
    in_netns(name(tag), [&] { idx = static_cast<int>(if_nametoindex(dev.c_str())); });
    return idx;
  }

private:
  static int shell(const std::string& cmd) { return std::system(cmd.c_str()); }
  static void must(const std::string& cmd) {
    if (shell(cmd) != 0)
      throw std::runtime_error("failed: " + cmd);
  }

  std::string prefix_;
  std::vector<std::string> names_;
};

} // namespace netlens::testing
