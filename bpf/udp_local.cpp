#include "bpf/udp_local.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/netlens_udp_local.h"
#include "flow/errno_text.hpp"
#include "udp_local.skel.h"

namespace netlens {

std::variant<std::unique_ptr<udp_local_book>, std::string>
udp_local_book::open(uint32_t max_entries) {
  std::unique_ptr<udp_local_book> self(new udp_local_book());
  const uint32_t n = max_entries == 0 ? 1 : max_entries;
  struct {
    const char* name;
    uint32_t key, value;
    unique_fd* fd;
  } maps[] = {
      {"nl_udp_ports", sizeof(nl_udp_port_key), sizeof(nl_udp_port_value), &self->ports_},
      {"nl_udp_local", sizeof(nl_udp_local_key), sizeof(nl_udp_local_value), &self->peers_}};
  for (auto& m : maps) {
    const int fd = bpf_map_create(BPF_MAP_TYPE_LRU_HASH, m.name, m.key, m.value, n, nullptr);
    if (fd < 0) {
      const int e = errno;
      const std::string hint =
          (e == EPERM || e == EACCES) ? " (run as root or grant CAP_BPF and CAP_NET_ADMIN)" : "";
      return std::string("creating the UDP local address map ") + m.name + ": " + errno_text(e) +
             hint;
    }
    m.fd->reset(fd);
  }
  return self;
}

udp_local_book::~udp_local_book() {
  detach_all();
}

void udp_local_book::destroy(instance& i) {
  if (i.link)
    bpf_link__destroy(i.link);
  if (i.skel)
    nl_udp_local__destroy(i.skel);
  i = instance{};
}

std::optional<std::string> udp_local_book::attach(uint32_t inode, int netns_fd) {
  if (attached_.count(inode))
    return std::nullopt;
  const std::string where = "network namespace " + std::to_string(inode);
  instance i;
  i.skel = nl_udp_local__open();
  if (!i.skel)
    return "opening the UDP local address program for " + where + ": " + errno_text(errno);
  i.skel->rodata->nl_netns = inode;
  if (int err = bpf_map__reuse_fd(i.skel->maps.nl_udp_ports, ports_.get()); err != 0) {
    destroy(i);
    return "sharing the UDP local address maps with " + where + ": " + errno_text(-err);
  }
  if (int err = bpf_map__reuse_fd(i.skel->maps.nl_udp_local, peers_.get()); err != 0) {
    destroy(i);
    return "sharing the UDP local address maps with " + where + ": " + errno_text(-err);
  }
  if (int err = nl_udp_local__load(i.skel); err != 0) {
    destroy(i);
    return "loading the UDP local address program for " + where + ": " + errno_text(-err);
  }
  i.link = bpf_program__attach_netns(i.skel->progs.nl_udp_local_addr, netns_fd);
  if (!i.link) {
    const int e = errno;
    destroy(i);
    return "attaching the UDP local address program (sk_lookup) in " + where + ": " + errno_text(e);
  }
  attached_.emplace(inode, i);
  return std::nullopt;
}

bool udp_local_book::detach(uint32_t inode) {
  auto it = attached_.find(inode);
  if (it == attached_.end())
    return false;
  destroy(it->second);
  attached_.erase(it);
  return true;
}

void udp_local_book::detach_all() {
  for (auto& [inode, i] : attached_)
    destroy(i);
  attached_.clear();
}

bool udp_local_book::local_address(uint32_t netns, uint8_t family, uint16_t local_port,
                                   const uint8_t* peer, uint16_t peer_port, uint8_t* local) const {
  nl_udp_port_key pk{};
  pk.netns = netns;
  pk.local_port = local_port;
  pk.family = family;
  nl_udp_port_value port{};
  if (bpf_map_lookup_elem(ports_.get(), &pk, &port) != 0)
    return false;
  if (!port.several) {
    std::memcpy(local, port.local, 16);
    return true;
  }
  nl_udp_local_key k{};
  k.netns = netns;
  k.family = family;
  k.local_port = local_port;
  k.remote_port = peer_port;
  std::memcpy(k.remote, peer, family == AF_INET ? 4 : 16);
  nl_udp_local_value v{};
  if (bpf_map_lookup_elem(peers_.get(), &k, &v) != 0)
    return false;
  std::memcpy(local, v.local, 16);
  return true;
}

} // namespace netlens
