#include "actors/netns/link_watcher.hpp"

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>

#include "actors/netns/rtnl_decoder.hpp"
#include "flow/errno_text.hpp"
#include "flow/unique_fd.hpp"
#include "flow/wake_signal.hpp"

namespace netlens {
namespace {

constexpr uint64_t k_wakeup_token = 0;
constexpr int k_reads_per_wakeup = 16;   // then other namespaces get their turn
constexpr size_t k_receive_size = 65536; // > the largest skb a dump part is written into (32 KiB)

// Opens the NETLINK_ROUTE socket inside the namespace: setns changes only the calling thread's
// namespace and a socket stays in the namespace it was created in, so a thread that lives just
// for the socket() call enters it and ends.
int open_socket_in(int netns_fd, uint32_t inode, std::string& err) {
  auto open_here = [] { return ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE); };
  if (netns_fd < 0) {
    int fd = open_here();
    if (fd < 0)
      err = "netns " + std::to_string(inode) + ": socket: " + errno_text(errno);
    return fd;
  }
  int fd = -1;
  try {
    std::thread t([&] {
      if (::setns(netns_fd, CLONE_NEWNET) != 0) {
        err = "netns " + std::to_string(inode) + ": entering it (setns): " + errno_text(errno);
        return;
      }
      fd = open_here();
      if (fd < 0)
        err = "netns " + std::to_string(inode) + ": socket: " + errno_text(errno);
    });
    t.join();
  } catch (const std::system_error& e) {
    err = "netns " + std::to_string(inode) + ": starting the setns thread: " + e.what();
  }
  return fd;
}

} // namespace

struct link_watcher::impl {
  struct watched_netns {
    uint32_t inode = 0;
    uint64_t token = 0;
    unique_fd sock;
    uint32_t port_id = 0;
    uint32_t next_seq = 1;
    uint32_t dump_seq = 0;
    bool dump_in_flight = false;
    bool dump_wanted = false; // ask again when the running dump is over
    bool dump_interrupted = false;
    bool dump_started = false; // its first message was read
    rtnl_decoder decoder;
    uint64_t malformed_seen = 0, unknown_seen = 0;
    netns_link_stats st;
  };

  sink_fn sink;
  int receive_buffer = 0;
  unique_fd epoll;
  wake_signal wakeup;
  std::thread poller;
  std::atomic<bool> stopping{false};
  std::mutex stop_mu; // serialises stop()

  mutable std::mutex mu; // guards what follows
  bool stopped = false;
  std::map<uint32_t, std::unique_ptr<watched_netns>> by_inode;
  std::unordered_map<uint64_t, watched_netns*> by_token;
  uint64_t next_token = 1;
  link_watcher_stats totals; // per_netns left empty here

  void set_error(watched_netns& ns, const std::string& step, int e) {
    ++ns.st.errors;
    ++totals.errors;
    ns.st.last_error = "netns " + std::to_string(ns.inode) + ": " + step + ": " + errno_text(e);
  }

  // Sends RTM_GETLINK with NLM_F_DUMP. False (and the error recorded) when it could not be sent.
  bool send_dump_request(watched_netns& ns) {
    struct {
      nlmsghdr hdr;
      ifinfomsg ifi;
      nlattr mask_hdr;
      uint32_t mask;
    } req{};
    req.hdr.nlmsg_len = sizeof req;
    req.hdr.nlmsg_type = RTM_GETLINK;
    req.hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.hdr.nlmsg_seq = ns.next_seq++;
    if (ns.next_seq == 0)
      ns.next_seq = 1; // 0 is what notifications carry
    req.ifi.ifi_family = AF_UNSPEC;
    req.mask_hdr.nla_len = NLA_HDRLEN + sizeof req.mask;
    req.mask_hdr.nla_type = IFLA_EXT_MASK;
    req.mask = RTEXT_FILTER_SKIP_STATS; // counters are not what we want; parts get smaller
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    ssize_t n;
    do {
      n = ::sendto(ns.sock.get(), &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&kernel),
                   sizeof kernel);
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(sizeof req)) {
      set_error(ns, "asking for a dump (RTM_GETLINK)", n < 0 ? errno : EIO);
      return false;
    }
    ns.dump_seq = req.hdr.nlmsg_seq;
    ns.dump_in_flight = true;
    ns.dump_wanted = false;
    ns.dump_interrupted = false;
    ns.dump_started = false;
    ++ns.st.dumps_requested;
    ++totals.dumps_requested;
    return true;
  }

  // The batch being filled for one namespace during one service() call.
  struct batch_builder {
    link_batch cur;
    std::vector<link_batch>& out;
    uint32_t inode;
    batch_builder(std::vector<link_batch>& o, uint32_t i) : out(o), inode(i) { cur.netns = i; }
    void flush() {
      if (cur.events.empty() && !cur.dump_begins && !cur.dump_ends)
        return;
      out.push_back(std::move(cur));
      cur = link_batch{};
      cur.netns = inode;
    }
  };

  // Asks for a dump now, or after the running one (one dump at a time per socket: the kernel
  // answers EBUSY to a second).
  void redump(watched_netns& ns) {
    if (ns.dump_in_flight) {
      ns.dump_wanted = true;
      return;
    }
    send_dump_request(ns);
  }

  void handle_message(watched_netns& ns, rtnl_message& m, batch_builder& b) {
    const bool ours = ns.dump_in_flight && m.port_id == ns.port_id && m.seq == ns.dump_seq;
    if (ours && (m.flags & NLM_F_DUMP_INTR))
      ns.dump_interrupted = true; // the device list changed while it was dumped
    if (ours && !ns.dump_started && m.kind != rtnl_kind::error) {
      // The dump begins at its first message, not at the request: what the socket held before
      // it was written happened before its snapshot, and must not count as seen.
      ns.dump_started = true;
      b.flush();
      b.cur.dump_begins = true;
    }
    switch (m.kind) {
    case rtnl_kind::new_link:
    case rtnl_kind::del_link: {
      link_event ev;
      ev.netns = ns.inode;
      ev.ifindex = m.ifindex;
      ev.name = std::move(m.name);
      ev.removed = m.kind == rtnl_kind::del_link;
      ev.up = m.up;
      ev.loopback = m.loopback;
      ev.dumped = ours;
      b.cur.events.push_back(std::move(ev));
      ++ns.st.events;
      ++totals.events;
      return;
    }
    case rtnl_kind::done:
      if (!ours)
        return;
      ns.dump_in_flight = false;
      if (m.error != 0) {
        set_error(ns, "dump", -m.error);
        ns.dump_wanted = false; // not asked again: an error that stays would loop
      } else if (ns.dump_interrupted) {
        ++totals.dumps_interrupted;
        ns.dump_wanted = true;
      } else {
        b.cur.dump_ends = true;
        b.flush();
        ++ns.st.dumps_completed;
        ++totals.dumps_completed;
      }
      if (ns.dump_wanted)
        redump(ns);
      return;
    case rtnl_kind::error:
      if (m.error == 0)
        return; // an ack
      if (m.port_id == ns.port_id && m.seq == ns.dump_seq && m.error == -ENOBUFS) {
        // The dump's first part found the buffer full. The dump still runs (the kernel goes on
        // at the next read), but notifications were dropped too: dump again after it.
        ns.dump_wanted = true;
        return;
      }
      if (m.port_id == ns.port_id && m.seq == ns.dump_seq)
        ns.dump_in_flight = false;
      set_error(ns, "netlink error", -m.error);
      return;
    }
  }

  // Drops the socket from the poll set for good: it can only spin from here.
  void fail(watched_netns& ns, const std::string& step, int e) {
    set_error(ns, step, e);
    ns.st.failed = true;
    ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, ns.sock.get(), nullptr);
  }

  // Reads what the socket holds (a bounded number of reads) into batches. Under mu.
  void service(watched_netns& ns, uint32_t revents, std::vector<uint8_t>& buf,
               std::vector<link_batch>& out) {
    batch_builder b(out, ns.inode);
    std::vector<rtnl_message> msgs;
    bool drained = false;
    for (int i = 0; i < k_reads_per_wakeup && !ns.st.failed; ++i) {
      sockaddr_nl from{};
      iovec iov{buf.data(), buf.size()};
      msghdr mh{};
      mh.msg_name = &from;
      mh.msg_namelen = sizeof from;
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      const ssize_t n = ::recvmsg(ns.sock.get(), &mh, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          drained = true;
          break;
        }
        if (errno == ENOBUFS) {
          ++ns.st.enobufs;
          ++totals.enobufs;
          redump(ns);
          continue;
        }
        fail(ns, "reading", errno);
        break;
      }
      if (n == 0) {
        drained = true;
        break;
      }
      if (from.nl_pid != 0)
        continue; // only the kernel speaks to this socket
      if (mh.msg_flags & MSG_TRUNC) {
        ++ns.st.malformed;
        ++totals.malformed;
        continue;
      }
      msgs.clear();
      ns.decoder.decode(buf.data(), static_cast<size_t>(n), msgs);
      for (auto& m : msgs)
        handle_message(ns, m, b);
    }
    const auto& ds = ns.decoder.stats();
    ns.st.malformed += ds.malformed - ns.malformed_seen;
    totals.malformed += ds.malformed - ns.malformed_seen;
    totals.unknown += ds.unknown - ns.unknown_seen;
    ns.malformed_seen = ds.malformed;
    ns.unknown_seen = ds.unknown;

    // EPOLLERR is a pending socket error, which the read above takes (ENOBUFS). One that a read
    // did not take, or a hang-up, would be reported on every epoll_wait: take or give up.
    if (drained && !ns.st.failed && (revents & (EPOLLERR | EPOLLHUP))) {
      int soerr = 0;
      socklen_t len = sizeof soerr;
      ::getsockopt(ns.sock.get(), SOL_SOCKET, SO_ERROR, &soerr, &len);
      if (soerr == ENOBUFS) {
        ++ns.st.enobufs;
        ++totals.enobufs;
        redump(ns);
      } else if (soerr != 0) {
        fail(ns, "socket error", soerr);
      } else if (revents & EPOLLHUP) {
        fail(ns, "hang-up", EPIPE);
      }
    }
    b.flush();
  }

  void run() {
    std::vector<uint8_t> buf(k_receive_size);
    epoll_event evs[32];
    std::vector<link_batch> out;
    while (!stopping.load()) {
      const int n = ::epoll_wait(epoll.get(), evs, 32, -1);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        std::lock_guard<std::mutex> lock(mu);
        ++totals.errors;
        return; // EBADF/EINVAL: nothing left to wait on
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        ++totals.wakeups;
        for (int i = 0; i < n; ++i) {
          if (evs[i].data.u64 == k_wakeup_token) {
            wakeup.clear();
            continue;
          }
          auto it = by_token.find(evs[i].data.u64);
          if (it == by_token.end())
            continue; // removed after epoll_wait returned
          service(*it->second, evs[i].events, buf, out);
        }
        totals.batches += out.size();
      }
      for (auto& b : out)
        sink(std::move(b));
      out.clear();
    }
  }
};

link_watcher::link_watcher(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

link_watcher::~link_watcher() {
  stop();
}

std::variant<std::unique_ptr<link_watcher>, std::string>
link_watcher::start(sink_fn sink, int receive_buffer_bytes) {
  auto p = std::make_unique<impl>();
  p->sink = std::move(sink);
  p->receive_buffer = receive_buffer_bytes;
  p->epoll.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (p->epoll.get() < 0)
    return "link watcher: epoll_create1: " + errno_text(errno);
  auto wake = wake_signal::open();
  if (auto* err = std::get_if<std::string>(&wake))
    return "link watcher: " + *err;
  p->wakeup = std::move(std::get<wake_signal>(wake));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = k_wakeup_token;
  if (::epoll_ctl(p->epoll.get(), EPOLL_CTL_ADD, p->wakeup.fd(), &ev) != 0)
    return "link watcher: epoll_ctl(eventfd): " + errno_text(errno);
  try {
    impl* raw = p.get();
    p->poller = std::thread([raw] { raw->run(); });
  } catch (const std::system_error& e) {
    return std::string("link watcher: starting the poll thread: ") + e.what();
  }
  return std::unique_ptr<link_watcher>(new link_watcher(std::move(p)));
}

std::optional<std::string> link_watcher::add(uint32_t inode, int netns_fd) {
  impl& s = *impl_;
  const std::string where = "netns " + std::to_string(inode) + ": ";
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.stopped)
      return where + "the link watcher is stopped";
    if (s.by_inode.count(inode))
      return std::nullopt;
  }
  std::string err;
  auto ns = std::make_unique<impl::watched_netns>();
  ns->inode = inode;
  ns->st.netns = inode;
  ns->sock.reset(open_socket_in(netns_fd, inode, err));
  if (ns->sock.get() < 0)
    return err;

  // The socket must be in the namespace we file it under: a stale fd or a wrong inode would
  // put another namespace's devices under this one.
  unique_fd sock_ns(::ioctl(ns->sock.get(), SIOCGSKNS));
  if (sock_ns.get() >= 0) {
    struct stat st {};
    if (::fstat(sock_ns.get(), &st) == 0 && static_cast<uint32_t>(st.st_ino) != inode)
      return where + "the namespace fd names netns " + std::to_string(st.st_ino);
  }
  const int rcvbuf = s.receive_buffer;
  if (rcvbuf > 0 &&
      ::setsockopt(ns->sock.get(), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) != 0 &&
      ::setsockopt(ns->sock.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0)
    return where + "SO_RCVBUF: " + errno_text(errno);
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  local.nl_groups = RTMGRP_LINK;
  if (::bind(ns->sock.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0)
    return where + "bind to RTMGRP_LINK: " + errno_text(errno);
  socklen_t len = sizeof local;
  if (::getsockname(ns->sock.get(), reinterpret_cast<sockaddr*>(&local), &len) != 0)
    return where + "getsockname: " + errno_text(errno);
  ns->port_id = local.nl_pid;

  // Under mu from here: the counters are shared with the poll thread.
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.stopped)
    return where + "the link watcher is stopped";
  if (s.by_inode.count(inode))
    return std::nullopt; // added meanwhile by another caller
  // Subscribed (bound) before the dump is asked for: nothing between the two is missed.
  if (!s.send_dump_request(*ns))
    return ns->st.last_error;
  ns->token = s.next_token++;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = ns->token;
  if (::epoll_ctl(s.epoll.get(), EPOLL_CTL_ADD, ns->sock.get(), &ev) != 0)
    return where + "epoll_ctl: " + errno_text(errno);
  s.by_token[ns->token] = ns.get();
  s.by_inode[inode] = std::move(ns);
  return std::nullopt;
}

void link_watcher::remove(uint32_t inode) {
  impl& s = *impl_;
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.by_inode.find(inode);
  if (it == s.by_inode.end())
    return;
  ::epoll_ctl(s.epoll.get(), EPOLL_CTL_DEL, it->second->sock.get(), nullptr);
  s.by_token.erase(it->second->token);
  s.by_inode.erase(it); // closes the socket
}

void link_watcher::stop() {
  if (!impl_)
    return;
  impl& s = *impl_;
  std::lock_guard<std::mutex> stop_lock(s.stop_mu);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.stopped)
      return;
    s.stopped = true;
  }
  s.stopping.store(true);
  s.wakeup.notify();
  const bool from_sink = s.poller.get_id() == std::this_thread::get_id();
  if (s.poller.joinable() && !from_sink)
    s.poller.join();
  else if (s.poller.joinable())
    s.poller.detach(); // stop() from the sink: the thread ends once the sink returns
  std::lock_guard<std::mutex> lock(s.mu);
  s.by_token.clear();
  s.by_inode.clear(); // closes every socket
  if (!from_sink) {
    s.epoll.reset();
    s.wakeup = wake_signal();
  }
}

size_t link_watcher::watched() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->by_inode.size();
}

link_watcher_stats link_watcher::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  link_watcher_stats r = impl_->totals;
  r.watched = impl_->by_inode.size();
  for (const auto& [inode, ns] : impl_->by_inode)
    r.per_netns.push_back(ns->st);
  return r;
}

} // namespace netlens
