#include "actors/conntrack/conntrack_consumer.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>
#include <utility>

#include <linux/netlink.h>

#include <libnetfilter_conntrack/libnetfilter_conntrack.h>

#include "actors/conntrack/netlink_decoder.hpp"
#include "actors/conntrack/rate_sampler.hpp"
#include "flow/errno_text.hpp"
#include "flow/unique_fd.hpp"
#include "flow/wake_signal.hpp"

namespace netlens {

const char* to_string(consumer_state s) {
  switch (s) {
  case consumer_state::starting:
    return "starting";
  case consumer_state::dumping:
    return "dumping";
  case consumer_state::following:
    return "following";
  case consumer_state::degraded:
    return "degraded";
  case consumer_state::stopped:
    return "stopped";
  case consumer_state::closed:
    return "closed";
  }
  return "unknown";
}

namespace {

uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Events arrive one per datagram: recvmmsg takes many per system call. A conntrack event is a
// few hundred bytes; a slot that is too small shows as MSG_TRUNC and is counted as malformed.
constexpr unsigned k_event_slots = 64;
constexpr size_t k_event_slot_bytes = 8192;
// The kernel sizes a dump's datagrams after the largest receive buffer it has seen, up to
// 32 KiB plus a page (netlink_dump): 64 KiB never truncates.
constexpr size_t k_dump_buffer_bytes = 64 * 1024;
// Datagrams read per wakeup before looking at the stop eventfd again, so stop stays prompt
// under a flood that never lets the socket run empty.
constexpr unsigned k_reads_per_wakeup = 16;

const char* cap_hint(int err) {
  return err == EPERM || err == EACCES ? " (needs CAP_NET_ADMIN in the network namespace)" : "";
}

} // namespace

struct conntrack_consumer::impl {
  conntrack_consumer_options opts;
  sink_fn sink;

  // Opened by the consumer thread (inside the namespace), closed by close().
  unique_fd event_sock;
  unique_fd dump_sock;
  wake_signal wake; // wakes the thread: to stop (stopping), resync, sync or a new rate limit
  std::atomic<bool> stopping{false};
  std::atomic<bool> resync_asked{false};
  std::atomic<bool> limit_asked{false};
  std::atomic<uint64_t> sync_asked{0};     // the highest sync number handed out
  std::atomic<bool> accepting_syncs{true}; // false once the thread will not answer any more
  std::atomic<int64_t> asked_limit{-1};
  std::thread thread;
  std::atomic<int> tid{0};

  mutable std::mutex mu;
  std::condition_variable cv;
  bool start_reported = false;
  std::string start_error;
  bool initial_known = false; // the initial dump finished or failed
  initial_dump_result initial = initial_dump_result::failed;
  bool thread_ended = false;
  bool closed = false;
  conntrack_consumer_stats published;

  // Below: the consumer thread's own, never touched by another thread while it runs.
  netlink_decoder event_decoder;
  netlink_decoder dump_decoder;
  rate_sampler sampler;
  conntrack_consumer_stats local;
  uint64_t truncated = 0;
  std::vector<mmsghdr> msgs;
  std::vector<iovec> iovs;
  // Left uninitialised on purpose: zero-filling would make all of it resident at once, ~600 KiB
  // per namespace served; untouched, a quiet namespace's consumer costs only the pages the
  // kernel has written to.
  struct raw_buffer {
    std::unique_ptr<uint8_t[]> bytes;
    size_t len = 0;
    void allocate(size_t n) {
      bytes.reset(new uint8_t[n]);
      len = n;
    }
    uint8_t* data() { return bytes.get(); }
    size_t size() const { return len; }
  };
  raw_buffer event_buf;
  raw_buffer dump_buf;
  std::vector<ct_event> decoded;
  ct_event_batch batch;
  bool batch_from_dump = false;
  bool dumping = false;
  bool dump_begun = false; // the current dump's dump_begins batch has gone out
  bool first_dump = true;
  bool resync_pending = false;
  uint64_t dump_deadline = 0;
  uint64_t retry_at = 0; // 0: no retry scheduled
  uint64_t dump_errors_seen = 0;
  uint64_t sync_sent = 0; // the highest sync number answered
  uint32_t seq = 0;

  impl(const conntrack_consumer_options& o, sink_fn s)
      : opts(o), sink(std::move(s)), sampler(o.rate_limit, now_ns) {
    if (opts.batch_max_events == 0)
      opts.batch_max_events = 1;
    local.state = consumer_state::starting;
    published = local;
  }

  // --- set-up, on the consumer thread ---

  std::string open_sockets() {
    if (opts.netns_fd >= 0 && setns(opts.netns_fd, CLONE_NEWNET) != 0) {
      int err = errno;
      return "entering the network namespace (fd " + std::to_string(opts.netns_fd) +
             ") failed: " + errno_text(err) + (err == EPERM ? " (needs CAP_SYS_ADMIN)" : "") +
             (err == EINVAL ? " (not a network namespace)" : "");
    }
    if (std::string err = open_event_socket(); !err.empty())
      return err;
    // Subscribed before the dump is asked for: an entry created meanwhile is in one or the other.
    if (std::string err = open_dump_socket(); !err.empty())
      return err;
    if (std::string err = send_dump_request(); !err.empty())
      return err;
    return refused_at_once();
  }

  // Replaces the event socket with a new one subscribed to NEW and DESTROY.
  std::string open_event_socket() {
    unique_fd ev(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER));
    if (!ev) {
      int err = errno;
      return "no conntrack netlink: socket(AF_NETLINK, NETLINK_NETFILTER) failed: " +
             errno_text(err);
    }
    // SO_RCVBUFFORCE passes net.core.rmem_max (with CAP_NET_ADMIN); without it, the capped
    // SO_RCVBUF is what there is.
    int size = static_cast<int>(std::min<uint32_t>(opts.receive_buffer_bytes, INT32_MAX / 2));
    if (setsockopt(ev.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
      setsockopt(ev.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    int granted = 0;
    socklen_t len = sizeof granted;
    if (getsockopt(ev.get(), SOL_SOCKET, SO_RCVBUF, &granted, &len) == 0)
      local.receive_buffer_bytes = static_cast<uint32_t>(granted);
    sockaddr_nl addr{};
    addr.nl_family = AF_NETLINK;
    addr.nl_groups = (1u << (NFNLGRP_CONNTRACK_NEW - 1)) | (1u << (NFNLGRP_CONNTRACK_DESTROY - 1));
    if (bind(ev.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      int err = errno;
      return "subscribing to conntrack NEW and DESTROY events failed: " + errno_text(err) +
             cap_hint(err);
    }
    event_sock = std::move(ev);
    return {};
  }

  std::string open_dump_socket() {
    unique_fd d(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER));
    if (!d)
      return "opening the conntrack dump socket failed: " + errno_text(errno);
    sockaddr_nl addr{};
    addr.nl_family = AF_NETLINK;
    if (bind(d.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      return "binding the conntrack dump socket failed: " + errno_text(errno);
    dump_sock = std::move(d);
    return {};
  }

  std::string send_dump_request() {
    struct {
      nlmsghdr hdr;
      nfgenmsg gen;
    } req{};
    req.hdr.nlmsg_len = sizeof req;
    req.hdr.nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
    req.hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.hdr.nlmsg_seq = ++seq;
    req.gen.nfgen_family = AF_UNSPEC; // every family
    req.gen.version = NFNETLINK_V0;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    for (;;) {
      ssize_t n = sendto(dump_sock.get(), &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&kernel),
                         sizeof kernel);
      if (n == static_cast<ssize_t>(sizeof req))
        return {};
      if (n < 0 && errno == EINTR)
        continue;
      int err = n < 0 ? errno : EIO;
      return "asking for the conntrack table dump failed: " + errno_text(err) + cap_hint(err);
    }
  }

  // The kernel answers a dump request within the sendto (the capability check, the subsystem
  // lookup, the first part of the dump): a refusal is already queued, and start() can name it.
  std::string refused_at_once() {
    nlmsghdr hdr{};
    int error = 0;
    uint8_t buf[sizeof hdr + sizeof error];
    ssize_t n = recv(dump_sock.get(), buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n < static_cast<ssize_t>(sizeof buf))
      return {};
    std::memcpy(&hdr, buf, sizeof hdr);
    std::memcpy(&error, buf + sizeof hdr, sizeof error);
    if (hdr.nlmsg_type != NLMSG_ERROR || error == 0)
      return {};
    int err = -error;
    if (err == EOPNOTSUPP || err == ENOENT || err == EPROTONOSUPPORT)
      return "no conntrack netlink (nf_conntrack_netlink): the table dump was refused: " +
             errno_text(err);
    return "the conntrack table dump was refused: " + errno_text(err) + cap_hint(err);
  }

  // --- the loop ---

  void run() {
    tid = static_cast<int>(syscall(SYS_gettid));
    pthread_setname_np(pthread_self(), "nl-conntrack"); // in top -H, perf, /proc/.../comm
    std::string err = open_sockets();
    {
      std::lock_guard<std::mutex> lock(mu);
      start_reported = true;
      start_error = err;
    }
    cv.notify_all();
    if (!err.empty())
      return; // start() closes what was opened
    msgs.resize(k_event_slots);
    iovs.resize(k_event_slots);
    event_buf.allocate(k_event_slots * k_event_slot_bytes);
    dump_buf.allocate(k_dump_buffer_bytes);
    try {
      begin_dump(now_ns());
      loop();
      flush();
    } catch (const std::exception& e) { // a sink that threw, or memory: end the thread, say why
      degrade(std::string("the conntrack consumer thread ended: ") + e.what());
    }
    accepting_syncs = false; // a sync asked for from now on would wait in vain
    sampler.advance();
    publish();
    {
      std::lock_guard<std::mutex> lock(mu);
      thread_ended = true;
    }
    cv.notify_all();
    tid = 0;
  }

  void loop() {
    for (;;) {
      const uint64_t now = now_ns();
      int timeout_ms = 1000; // the rate EWMA and the published stats move on while idle
      auto until = [&](uint64_t t) {
        int ms = t > now ? static_cast<int>((t - now + 999'999) / 1'000'000) : 0;
        timeout_ms = std::min(timeout_ms, ms);
      };
      if (sync_asked.load(std::memory_order_acquire) > sync_sent)
        timeout_ms = 0; // a sync is owed: read the socket (renewed, perhaps) dry at once
      if (dumping)
        until(dump_deadline);
      else if (retry_at)
        until(retry_at);

      pollfd fds[3] = {{wake.fd(), POLLIN, 0}, {event_sock.get(), POLLIN, 0}, {-1, 0, 0}};
      nfds_t nfds = 2;
      if (dumping && dump_sock) {
        fds[2] = {dump_sock.get(), POLLIN, 0};
        nfds = 3;
      }
      int ready = poll(fds, nfds, timeout_ms);
      if (ready < 0 && errno != EINTR) {
        degrade("poll on the conntrack sockets failed: " + errno_text(errno));
        return;
      }
      if (ready > 0 && fds[0].revents) {
        if (stopping.load())
          return;
        wake.clear();
        if (resync_asked.exchange(false))
          request_resync();
        if (limit_asked.exchange(false))
          sampler.set_limit(asked_limit.load());
      }
      // The dump first: an entry it lists and then an event about it read in this wakeup
      // reach the sink in that order.
      if (nfds == 3 && fds[2].revents)
        read_dump();
      // The sync number is taken before the socket is read: whatever was queued when it was
      // asked for is read by the time the socket is found empty.
      const uint64_t want = sync_asked.load(std::memory_order_acquire);
      bool dry = false;
      if ((ready > 0 && fds[1].revents) || want > sync_sent)
        dry = read_events();
      if (want > sync_sent && dry)
        send_sync(want);

      const uint64_t later = now_ns();
      dump_overdue(later);
      if (!dumping && retry_at && later >= retry_at)
        begin_dump(later);
      sampler.advance();
      publish();
    }
  }

  // True when the socket was found empty (or cannot be read any more): everything queued
  // before the call has been handed to the batch, and the batch over to the sink.
  bool read_events() {
    if (!event_sock)
      return true;
    for (unsigned round = 0; round < k_reads_per_wakeup; ++round) {
      for (unsigned i = 0; i < k_event_slots; ++i) {
        iovs[i] = {event_buf.data() + i * k_event_slot_bytes, k_event_slot_bytes};
        msgs[i] = {};
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
      }
      int n = recvmmsg(event_sock.get(), msgs.data(), k_event_slots, MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        if (errno == ENOBUFS) {
          // The kernel dropped events for this socket: a NEW or, worse, a DESTROY is gone.
          // Only a new dump tells what the table holds now. What is still queued is older
          // than that dump: read after the dump began, a NEW whose DESTROY was lost would count
          // as seen by the resync and escape its sweep. A new socket leaves it behind; the
          // dump, asked for after the new subscription, covers all of it.
          ++local.enobufs;
          flush();
          if (std::string err = open_event_socket(); !err.empty())
            degrade("renewing the event socket after ENOBUFS failed (" + err +
                    "); events older than the resync may keep stale entries");
          request_resync();
          return false; // the new socket is read next
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK)
          degrade("reading conntrack events failed: " + errno_text(errno));
        flush();
        return true;
      }
      for (int i = 0; i < n; ++i) {
        if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
          ++truncated;
          continue;
        }
        take_events(event_buf.data() + static_cast<size_t>(i) * k_event_slot_bytes,
                    msgs[i].msg_len);
      }
      if (n < static_cast<int>(k_event_slots)) {
        flush(); // nothing more to read
        return true;
      }
    }
    return false; // more may be queued: the next wakeup reads on
  }

  // Everything read before sync number want was asked for has gone to the sink: say so.
  void send_sync(uint64_t want) {
    flush();
    ct_event_batch b;
    b.netns = opts.netns_inode;
    b.sync = want;
    sync_sent = want;
    ++local.batches;
    ++local.syncs;
    sink(std::move(b));
  }

  void take_events(const uint8_t* data, size_t len) {
    decoded.clear();
    event_decoder.decode(data, len, opts.netns_inode, false, decoded);
    if (batch_from_dump)
      flush();
    for (const ct_event& ev : decoded) {
      ++local.events;
      if (ev.kind == ct_event_kind::created) {
        if (!sampler.keep()) {
          ++local.sampled_out;
          continue;
        }
      } else {
        sampler.observe();
      }
      ++local.events_kept;
      batch.events.push_back(ev);
      if (batch.events.size() >= opts.batch_max_events)
        flush();
    }
  }

  // True (and the dump failed) when the dump has run past its deadline. Checked between reads
  // too: a dump that keeps the socket busy must not outlive its timeout either.
  bool dump_overdue(uint64_t now) {
    if (!dumping || now < dump_deadline)
      return false;
    fail_dump("the conntrack table dump did not finish within " +
                  std::to_string(opts.dump_timeout_ms) + " ms",
              initial_dump_result::timed_out, true);
    return true;
  }

  void read_dump() {
    for (unsigned round = 0; round < k_reads_per_wakeup && dumping; ++round) {
      if (dump_overdue(now_ns()))
        return;
      iovec iov{dump_buf.data(), dump_buf.size()};
      msghdr mh{};
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      ssize_t n = recvmsg(dump_sock.get(), &mh, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
          fail_dump("reading the conntrack table dump failed: " + errno_text(errno),
                    initial_dump_result::failed, true);
        return;
      }
      if (mh.msg_flags & MSG_TRUNC) {
        fail_dump("a conntrack dump message did not fit the receive buffer",
                  initial_dump_result::failed, true);
        return;
      }
      take_dump(dump_buf.data(), static_cast<size_t>(n));
    }
  }

  void take_dump(const uint8_t* data, size_t len) {
    decoded.clear();
    dump_decoder.decode(data, len, opts.netns_inode, true, decoded);
    if (!batch_from_dump)
      flush();
    for (const ct_event& ev : decoded) {
      if (batch.events.empty() && !batch_from_dump)
        start_dump_batch();
      batch.events.push_back(ev);
      ++local.dumped_entries;
      if (batch.events.size() >= opts.batch_max_events)
        flush();
    }
    const auto& ds = dump_decoder.stats();
    if (ds.errors != dump_errors_seen) {
      dump_errors_seen = ds.errors;
      fail_dump("the kernel ended the conntrack table dump with: " + errno_text(-ds.last_error) +
                    cap_hint(-ds.last_error),
                initial_dump_result::failed, false);
      return;
    }
    if (ds.done)
      finish_dump();
  }

  void start_dump_batch() {
    batch_from_dump = true;
    if (!dump_begun) {
      batch.dump_begins = true;
      dump_begun = true;
    }
  }

  void begin_dump(uint64_t now) {
    retry_at = 0;
    resync_pending = false;
    std::string err;
    if (!dump_sock)
      err = open_dump_socket();
    // The very first request went out in open_sockets(), so start() could report a refusal.
    if (err.empty() && !first_dump)
      err = send_dump_request();
    if (!err.empty()) {
      fail_dump(err, initial_dump_result::failed, true);
      return;
    }
    if (!first_dump)
      ++local.resyncs;
    first_dump = false;
    dump_decoder.clear_done();
    dump_errors_seen = dump_decoder.stats().errors;
    dumping = true;
    dump_begun = false;
    dump_deadline = now + uint64_t{opts.dump_timeout_ms} * 1'000'000u;
    if (local.state != consumer_state::degraded)
      local.state = consumer_state::dumping;
  }

  void finish_dump() {
    if (!dump_begun) { // an empty table: still a begin and an end for the cache
      if (!batch_from_dump)
        flush();
      start_dump_batch();
    }
    batch.dump_ends = true;
    flush(true);
    dumping = false;
    ++local.dumps_completed;
    local.state = consumer_state::following;
    local.degraded_reason.clear();
    publish(); // who waits on the initial dump reads the stats next
    report_initial(initial_dump_result::done);
    if (resync_pending)
      begin_dump(now_ns());
  }

  // reopen: the dump may still be running in the kernel; a fresh socket leaves it behind.
  void fail_dump(const std::string& why, initial_dump_result as, bool reopen) {
    if (batch_from_dump)
      flush(); // what the dump listed is still true; without dump_ends nothing is swept
    ++local.dumps_failed;
    dumping = false;
    resync_pending = false;
    if (reopen)
      dump_sock.reset();
    degrade(why);
    retry_at = now_ns() + uint64_t{opts.dump_retry_ms} * 1'000'000u;
    publish();
    report_initial(as);
  }

  void request_resync() {
    if (dumping)
      resync_pending = true; // this dump may have passed entries whose DESTROY was lost
    else if (!retry_at)
      begin_dump(now_ns());
    // a retry already scheduled dumps anyway
  }

  void degrade(const std::string& why) {
    local.state = consumer_state::degraded;
    local.degraded_reason = why;
  }

  void report_initial(initial_dump_result r) {
    std::lock_guard<std::mutex> lock(mu);
    if (!initial_known) {
      initial_known = true;
      initial = r;
      cv.notify_all();
    }
  }

  // Hands the batch over: when full, when the socket has run empty, and when the source changes.
  // force: also an empty one (a dump boundary).
  void flush(bool force = false) {
    if (batch.events.empty() && !force && !batch.dump_begins)
      return;
    batch.netns = opts.netns_inode;
    ++local.batches;
    ct_event_batch out = std::move(batch);
    batch = ct_event_batch{};
    batch.events.reserve(std::min<uint32_t>(opts.batch_max_events, 4096));
    batch_from_dump = false;
    sink(std::move(out));
  }

  void publish() {
    const auto& e = event_decoder.stats();
    const auto& d = dump_decoder.stats();
    local.malformed = e.malformed + d.malformed + truncated;
    local.unknown = e.unknown + d.unknown;
    local.events_per_s = sampler.rate_per_s();
    local.sampling_percent = sampler.sampling_percent();
    local.rate_limit = sampler.limit();
    std::lock_guard<std::mutex> lock(mu);
    consumer_state shown = published.state;
    published = local;
    if (shown == consumer_state::stopped || shown == consumer_state::closed)
      published.state = shown;
  }
};

std::variant<std::unique_ptr<conntrack_consumer>, std::string>
conntrack_consumer::start(const conntrack_consumer_options& opts, sink_fn sink) {
  if (!sink)
    return std::string("conntrack consumer: no sink given");
  std::unique_ptr<conntrack_consumer> c(new conntrack_consumer());
  c->impl_ = std::make_unique<impl>(opts, std::move(sink));
  impl& im = *c->impl_;
  auto wake = wake_signal::open();
  if (auto* err = std::get_if<std::string>(&wake))
    return "conntrack consumer: " + *err;
  im.wake = std::move(std::get<wake_signal>(wake));
  // The thread enters the namespace, not this one: setns moves only the calling thread.
  im.thread = std::thread([&im] { im.run(); });
  std::string err;
  {
    std::unique_lock<std::mutex> lock(im.mu);
    im.cv.wait(lock, [&] { return im.start_reported; });
    err = im.start_error;
  }
  if (!err.empty()) {
    im.thread.join();
    im.event_sock.reset();
    im.dump_sock.reset();
    im.wake = wake_signal();
    return err;
  }
  return c;
}

initial_dump_result conntrack_consumer::wait_initial_dump(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait_for(lock, timeout, [&] { return impl_->initial_known || impl_->thread_ended; });
  if (impl_->initial_known)
    return impl_->initial;
  return impl_->thread_ended ? initial_dump_result::failed : initial_dump_result::timed_out;
}

void conntrack_consumer::set_rate_limit(int64_t limit_per_s) {
  if (!impl_ || !impl_->thread.joinable() || impl_->stopping.load())
    return;
  impl_->asked_limit = limit_per_s;
  impl_->limit_asked = true;
  impl_->wake.notify();
}

void conntrack_consumer::request_resync() {
  if (!impl_ || !impl_->thread.joinable() || impl_->stopping.load())
    return;
  impl_->resync_asked = true;
  impl_->wake.notify();
}

uint64_t conntrack_consumer::request_sync() {
  if (!impl_ || !impl_->thread.joinable() || impl_->stopping.load() ||
      !impl_->accepting_syncs.load())
    return 0;
  uint64_t seq = impl_->sync_asked.fetch_add(1, std::memory_order_acq_rel) + 1;
  impl_->wake.notify();
  return seq;
}

void conntrack_consumer::stop() {
  if (!impl_ || !impl_->thread.joinable())
    return;
  if (impl_->thread.get_id() == std::this_thread::get_id())
    return; // from the sink: the thread cannot join itself; close() from elsewhere will
  impl_->stopping = true;
  impl_->wake.notify();
  impl_->thread.join();
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->closed)
    impl_->published.state = consumer_state::stopped;
}

void conntrack_consumer::close() {
  if (!impl_)
    return;
  stop();
  if (impl_->thread.joinable())
    return; // called from the consumer thread itself
  impl_->event_sock.reset();
  impl_->dump_sock.reset();
  impl_->wake = wake_signal();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->closed = true;
  impl_->published.state = consumer_state::closed;
}

conntrack_consumer_stats conntrack_consumer::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->published;
}

int conntrack_consumer::thread_id() const {
  return impl_ ? impl_->tid.load() : 0;
}

conntrack_consumer::~conntrack_consumer() {
  close();
}

} // namespace netlens
