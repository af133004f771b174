#include "flow/socket_table.hpp"

#include <cerrno>
#include <cstring>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "flow/errno_text.hpp"
#include "flow/unique_fd.hpp"

namespace netlens {
namespace {

constexpr uint8_t k_fin_wait1 = 4, k_fin_wait2 = 5, k_last_ack = 9, k_closing = 11;

// One dump for one address family; adds the cookies it reports. Empty string on success.
std::string dump_family(int fd, uint8_t family, std::unordered_set<uint64_t>& out) {
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof(msg);
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.req.sdiag_family = family;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = ~0u;
  if (send(fd, &msg, sizeof(msg), 0) < 0)
    return std::string("sock_diag request: ") + errno_text();
  std::vector<char> buf(64 * 1024);
  for (;;) {
    ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return std::string("sock_diag read: ") + errno_text();
    }
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, len);
         h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE)
        return "";
      if (h->nlmsg_type == NLMSG_ERROR)
        return "sock_diag answered an error";
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg)))
        continue; // malformed: skip
      auto* d = static_cast<inet_diag_msg*>(NLMSG_DATA(h));
      out.insert(uint64_t{d->id.idiag_cookie[0]} | (uint64_t{d->id.idiag_cookie[1]} << 32));
    }
  }
}

std::variant<std::unordered_set<uint64_t>, std::string> dump_cookies(unique_fd fd) {
  std::unordered_set<uint64_t> cookies;
  std::string err = dump_family(fd.get(), AF_INET, cookies);
  if (err.empty())
    err = dump_family(fd.get(), AF_INET6, cookies);
  if (!err.empty())
    return err;
  return cookies;
}

} // namespace

std::variant<std::unordered_set<uint64_t>, std::string> live_tcp_cookies() {
  unique_fd fd(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd)
    return std::string("sock_diag socket: ") + errno_text();
  return dump_cookies(std::move(fd));
}

std::variant<std::unordered_set<uint64_t>, std::string> live_tcp_cookies_in(int netns_fd) {
  int made = -1, err = 0;
  std::thread inside([&] {
    if (setns(netns_fd, CLONE_NEWNET) != 0) {
      err = errno;
      return;
    }
    made = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (made < 0)
      err = errno;
  });
  inside.join();
  unique_fd fd(made);
  if (!fd)
    return std::string("sock_diag socket in another network namespace: ") + errno_text(err);
  return dump_cookies(std::move(fd));
}

std::vector<const nl_conn*> closing_entries_to_verify(const std::vector<nl_conn>& active,
                                                      uint64_t now_ns, uint64_t min_idle_ns) {
  std::vector<const nl_conn*> out;
  for (const nl_conn& c : active) {
    bool closing = c.tcp_state == k_fin_wait1 || c.tcp_state == k_fin_wait2 ||
                   c.tcp_state == k_closing || c.tcp_state == k_last_ack;
    if (c.protocol == IPPROTO_TCP && closing && now_ns > c.last_ns &&
        now_ns - c.last_ns >= min_idle_ns)
      out.push_back(&c);
  }
  return out;
}

uint32_t own_netns_inode() {
  struct stat st {};
  return stat("/proc/self/ns/net", &st) == 0 ? static_cast<uint32_t>(st.st_ino) : 0;
}

} // namespace netlens
