#include "actors/exporter/collector_link.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <utility>

#include "flow/clock.hpp"
#include "flow/errno_text.hpp"

namespace netlens {
namespace {

// How often a paced UDP link tries its templates again while the collector refuses.
constexpr auto k_template_retry = std::chrono::milliseconds(100);

uint32_t unix_now_s() {
  return static_cast<uint32_t>(realtime_now_ns() / 1000000000ull);
}

// A message whose length field disagrees with its size would desynchronize a TCP stream for the
// rest of the session, so it is refused before it can go out.
bool well_formed(const ipfix_message& msg) {
  if (msg.bytes.size() < k_ipfix_header_size)
    return false;
  size_t length = (size_t{msg.bytes[2]} << 8) | msg.bytes[3];
  return length == msg.bytes.size();
}

} // namespace

const char* to_string(link_state s) {
  switch (s) {
  case link_state::down:
    return "down";
  case link_state::resolving:
    return "resolving";
  case link_state::connecting:
    return "connecting";
  case link_state::up:
    return "up";
  case link_state::backoff:
    return "backoff";
  }
  return "unknown";
}

// -- resolving ------------------------------------------------------------------------------------

struct collector_link::resolve_job {
  std::mutex mu;
  bool done = false;
  std::vector<endpoint> addrs;
  std::string error;
};

namespace {

// getaddrinfo for one collector; numeric hosts never reach DNS (AI_NUMERICHOST).
template <class Endpoint>
std::string resolve(const collector_address& where, bool tcp, std::vector<Endpoint>& out) {
  addrinfo hints{};
  hints.ai_family = where.family; // AF_UNSPEC for a host name
  hints.ai_socktype = tcp ? SOCK_STREAM : SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV | (where.numeric ? AI_NUMERICHOST : 0);
  addrinfo* res = nullptr;
  auto port = std::to_string(where.port);
  int rc = getaddrinfo(where.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0)
    return "resolving " + where.host + ": " +
           (rc == EAI_SYSTEM ? errno_text(errno) : std::string(gai_strerror(rc)));
  for (auto* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage))
      continue;
    Endpoint e;
    std::memcpy(&e.addr, ai->ai_addr, ai->ai_addrlen);
    e.len = ai->ai_addrlen;
    e.family = ai->ai_family;
    out.push_back(e);
  }
  freeaddrinfo(res);
  if (out.empty())
    return "resolving " + where.host + ": no usable address";
  return {};
}

} // namespace

// -- collector_link -------------------------------------------------------------------------------

collector_link::collector_link(collector_address where, collector_transport transport,
                               collector_link_options opts)
    : where_(std::move(where)), transport_(transport), opts_(opts), backoff_(opts.initial_backoff) {
}

void collector_link::poll(clock::time_point now) {
  last_now_ = now;
  if (closed_)
    return;
  switch (state_) {
  case link_state::down:
    start_attempt(now);
    break;
  case link_state::resolving: {
    std::vector<endpoint> addrs;
    std::string error;
    {
      std::lock_guard<std::mutex> lock(job_->mu);
      if (!job_->done)
        return;
      addrs = std::move(job_->addrs);
      error = std::move(job_->error);
    }
    job_.reset();
    if (!error.empty())
      attempt_failed(std::move(error), now);
    else
      on_resolved(std::move(addrs), now);
    break;
  }
  case link_state::connecting:
    check_connect(now, 0);
    break;
  case link_state::backoff:
    if (now >= retry_at_)
      start_attempt(now);
    break;
  case link_state::up:
    break;
  }
  if (state_ == link_state::up && is_tcp()) {
    check_peer();
    if (state_ == link_state::up)
      flush();
  }
  if (paced()) {
    probe_if_due(now);
    pump_datagrams(now, 0);
  }
}

void collector_link::start_attempt(clock::time_point now) {
  fd_.reset();
  if (where_.numeric) {
    std::vector<endpoint> addrs;
    auto error = resolve(where_, is_tcp(), addrs);
    if (!error.empty())
      attempt_failed(std::move(error), now);
    else
      on_resolved(std::move(addrs), now);
    return;
  }
  // The thread holds its own reference: a link destroyed meanwhile leaves it to finish alone.
  auto job = std::make_shared<resolve_job>();
  try {
    std::thread([job, where = where_, tcp = is_tcp()] {
      std::vector<endpoint> addrs;
      auto error = resolve(where, tcp, addrs);
      std::lock_guard<std::mutex> lock(job->mu);
      job->addrs = std::move(addrs);
      job->error = std::move(error);
      job->done = true;
    }).detach();
  } catch (const std::system_error& e) {
    attempt_failed(std::string("starting the resolver thread: ") + e.what(), now);
    return;
  }
  job_ = std::move(job);
  state_ = link_state::resolving;
}

void collector_link::on_resolved(std::vector<endpoint> addrs, clock::time_point now) {
  addrs_ = std::move(addrs);
  next_addr_ = 0;
  attempt_error_.clear();
  try_connect(now);
}

// Tries the resolved addresses in order from next_addr_ until one connects or is in progress.
void collector_link::try_connect(clock::time_point now) {
  int type = (is_tcp() ? SOCK_STREAM : SOCK_DGRAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
  while (next_addr_ < addrs_.size()) {
    const auto& e = addrs_[next_addr_++];
    unique_fd fd(::socket(e.family, type, 0));
    if (!fd) {
      attempt_error_ = "socket(): " + errno_text(errno);
      continue;
    }
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&e.addr), e.len) == 0) {
      fd_ = std::move(fd);
      on_connected();
      return;
    }
    if (errno == EINPROGRESS) {
      fd_ = std::move(fd);
      state_ = link_state::connecting;
      connect_deadline_ = now + opts_.connect_timeout;
      return;
    }
    attempt_error_ = "connecting to " + where_.host + ": " + errno_text(errno);
  }
  attempt_failed(attempt_error_, now);
}

void collector_link::check_connect(clock::time_point now, int wait_ms) {
  pollfd p{fd_.get(), POLLOUT, 0};
  int rc = ::poll(&p, 1, wait_ms);
  if (rc == 0) {
    if (now >= connect_deadline_) {
      attempt_error_ = "connecting to " + where_.host + ": timed out";
      fd_.reset();
      try_connect(now);
    }
    return;
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (rc < 0)
    err = errno;
  else if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    err = errno;
  if (err == 0) {
    on_connected();
    return;
  }
  attempt_error_ = "connecting to " + where_.host + ": " + errno_text(err);
  fd_.reset();
  try_connect(now);
}

void collector_link::on_connected() {
  state_ = link_state::up;
  if (ever_up_)
    ++stats_.reconnects;
  ever_up_ = true;
  backoff_ = opts_.initial_backoff;
  sequence_ = ipfix_sequence{};
  // What waits in the queue was accepted under the template contract, so it starts with the
  // templates this session needs; an empty queue means the caller still has to send them.
  needs_templates_ = queue_.empty() || !queue_.front().msg.templates_only;
  if (is_tcp())
    flush();
}

void collector_link::attempt_failed(std::string error, clock::time_point now) {
  fd_.reset();
  stats_.last_error = std::move(error);
  state_ = link_state::backoff;
  retry_at_ = now + backoff_;
  backoff_ = std::min(backoff_ * 2, opts_.max_backoff);
}

void collector_link::lose_session(std::string error) {
  drop_queue();
  needs_templates_ = true;
  attempt_failed(std::move(error), last_now_);
}

// An IPFIX collector sends nothing back, so a readable socket means the peer closed or reset it.
void collector_link::check_peer() {
  uint8_t scratch[512];
  for (int i = 0; i < 4; ++i) {
    ssize_t n = ::recv(fd_.get(), scratch, sizeof scratch, MSG_DONTWAIT);
    if (n > 0)
      continue;
    if (n == 0) {
      lose_session("collector closed the connection");
    } else if (errno == EINTR) {
      continue;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
      lose_session("connection to " + where_.host + ": " + errno_text(errno));
    }
    return;
  }
}

void collector_link::flush() {
  while (!queue_.empty()) {
    auto& head = queue_.front();
    auto& bytes = head.msg.bytes;
    if (!head.stamped) {
      sequence_.stamp(head.msg, unix_now_s());
      head.stamped = true;
    }
    ssize_t n = ::send(fd_.get(), bytes.data() + head.offset, bytes.size() - head.offset,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      lose_session("sending to " + where_.host + ": " + errno_text(errno));
      return;
    }
    head.offset += static_cast<size_t>(n);
    stats_.bytes_sent += static_cast<uint64_t>(n);
    stats_.queued_bytes -= static_cast<uint64_t>(n);
    if (head.offset == bytes.size()) {
      ++stats_.messages_sent;
      stats_.records_sent += head.msg.data_records;
      queue_.pop_front();
    }
  }
}

void collector_link::send(ipfix_message msg, clock::time_point now) {
  if (state_ == link_state::down && !closed_)
    poll(now); // sent before the first poll: start the session now
  if (closed_ || !well_formed(msg) || (!paced() && needs_templates_ && !msg.templates_only)) {
    drop(msg);
    return;
  }
  if (paced()) {
    queue_datagram(std::move(msg), now);
    return;
  }
  if (!is_tcp()) {
    if (state_ != link_state::up)
      drop(msg);
    else
      send_datagram(msg);
    return;
  }
  if (stats_.queued_bytes + msg.bytes.size() > opts_.queue_bound_bytes) {
    drop(msg);
    return;
  }
  if (msg.templates_only)
    needs_templates_ = false;
  stats_.queued_bytes += msg.bytes.size();
  queue_.push_back(pending{std::move(msg)});
  if (state_ == link_state::up)
    flush();
}

void collector_link::send_datagram(ipfix_message& msg) {
  auto before = sequence_;
  sequence_.stamp(msg, unix_now_s());
  ssize_t n;
  do {
    n = ::send(fd_.get(), msg.bytes.data(), msg.bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    // ECONNREFUSED reports an ICMP port unreachable for an earlier datagram: the collector may
    // have restarted and forgotten the templates.
    note_send_error(errno);
    sequence_ = before; // not sent: the collector never counts it
    drop(msg);
    return;
  }
  if (msg.templates_only)
    needs_templates_ = false;
  ++stats_.messages_sent;
  stats_.bytes_sent += static_cast<uint64_t>(n);
  stats_.records_sent += msg.data_records;
}

void collector_link::queue_datagram(ipfix_message msg, clock::time_point now) {
  if (msg.templates_only) {
    if (!last_was_templates_)
      templates_.clear();
    templates_.push_back(msg);
    last_was_templates_ = true;
  } else {
    last_was_templates_ = false;
    probe_if_due(now);
    if (refused_ || stats_.queued_bytes + msg.bytes.size() > opts_.queue_bound_bytes) {
      drop(msg);
      return;
    }
  }
  if (udp_queue_.empty()) {
    pace_credit_ = 0;
    last_pump_ = now;
  }
  stats_.queued_bytes += msg.bytes.size();
  udp_queue_.push_back(std::move(msg));
  note_arrival(now);
  double window_ms = static_cast<double>(opts_.pace_window.count());
  pace_per_ms_ = std::max(pace_per_ms_, static_cast<double>(udp_queue_.size()) / window_ms);
}

// The rate messages came at over the last pace window, counted in 10 ms buckets. Pacing only
// by backlog / window holds a whole window of data on a host that flushes often (the backlog
// grows until the pace matches the rate): 0.8 s at a busy host's 7 MB/s of IPFIX filled the
// 8 MB bound. A lone burst counts as its size over the window, so it still leaves spread.
void collector_link::note_arrival(clock::time_point now) {
  constexpr auto k_bucket = std::chrono::milliseconds(10);
  if (arrivals_.empty() || now - arrivals_.back().first >= k_bucket)
    arrivals_.emplace_back(now, 0);
  ++arrivals_.back().second;
  ++arrivals_in_window_;
}

double collector_link::arrival_per_ms(clock::time_point now) {
  while (!arrivals_.empty() && now - arrivals_.front().first >= opts_.pace_window) {
    arrivals_in_window_ -= arrivals_.front().second;
    arrivals_.pop_front();
  }
  return static_cast<double>(arrivals_in_window_) / static_cast<double>(opts_.pace_window.count());
}

// Sends what the pace allows since the last pump (at least at_least, and a few at any rate so a
// small backlog never waits for credit).
void collector_link::pump_datagrams(clock::time_point now, size_t at_least) {
  constexpr size_t k_min_burst = 4;
  if (udp_queue_.empty()) {
    pace_per_ms_ = 0;
    pace_credit_ = 0;
    last_pump_ = now;
    return;
  }
  double elapsed_ms = std::chrono::duration<double, std::milli>(now - last_pump_).count();
  last_pump_ = now;
  // Credit for at most two ticks of the caller's timer (5 ms): a late poll must not turn into
  // the very burst the pace is there to avoid. A collector's default receive buffer (208 KiB)
  // holds ~75 datagrams of 1,400 bytes; with 50 ms of credit a late tick sent ~150 at once and
  // nfcapd, sharing 2 busy CPUs, lost 850 of 58,000 at 20,000 connection ends/s; with 10 ms none.
  constexpr double k_max_credit_ms = 10;
  elapsed_ms = std::clamp(elapsed_ms, 0.0, k_max_credit_ms);
  // A caller whose timer runs late (a starved CPU) still empties the queue within the window:
  // the pace follows the backlog up. It is never slower than a quarter above the rate messages
  // came at, so what one flush brings leaves before the next one on a host that flushes often.
  constexpr double k_rate_headroom = 1.25;
  double window_ms = static_cast<double>(opts_.pace_window.count());
  pace_per_ms_ = std::max({pace_per_ms_, static_cast<double>(udp_queue_.size()) / window_ms,
                           k_rate_headroom * arrival_per_ms(now)});
  pace_credit_ += elapsed_ms * pace_per_ms_;
  size_t budget = std::max({k_min_burst, at_least, static_cast<size_t>(pace_credit_)});
  pace_credit_ = std::max(0.0, pace_credit_ - static_cast<double>(budget));
  while (budget-- > 0 && !udp_queue_.empty()) {
    ipfix_message msg = std::move(udp_queue_.front());
    udp_queue_.pop_front();
    stats_.queued_bytes -= msg.bytes.size();
    if (state_ != link_state::up) {
      drop(msg);
      continue;
    }
    send_paced(msg);
  }
}

// A refusal (ICMP port unreachable) answers an earlier datagram and waits on the socket until
// the next call; taken here, it marks the templates for resending instead of failing the
// message that happens to go next (often the templates themselves, just as the collector is
// back).
void collector_link::take_pending_error() {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0)
    note_send_error(err);
}

void collector_link::note_send_error(int err) {
  stats_.last_error = "sending to " + where_.host + ": " + errno_text(err);
  needs_templates_ = true;
  // A full socket buffer is the host's pressure, not the collector's answer.
  if (err != EAGAIN && err != EWOULDBLOCK && err != ENOBUFS)
    refused_ = true;
}

// While the collector refuses, the templates go every k_template_retry, alone: a probe that
// costs one datagram, not the data behind it. Sent, it lets data flow again; if the collector
// is still away its refusal of them shows at the next call and data is dropped again.
void collector_link::probe_if_due(clock::time_point now) {
  if (state_ != link_state::up || !fd_)
    return;
  take_pending_error();
  if (refused_ && now - templates_tried_ >= k_template_retry)
    resend_templates(now);
}

// The templates last given, sent again; a refusal of them marks the link refused again.
void collector_link::resend_templates(clock::time_point now) {
  templates_tried_ = now;
  refused_ = false;
  for (auto copy : templates_)
    send_datagram(copy);
}

void collector_link::send_paced(ipfix_message& msg) {
  take_pending_error();
  // While the collector is away every datagram is refused; templates in front of each would
  // double the useless traffic, so they are tried again at most every k_template_retry.
  if (!msg.templates_only && needs_templates_) {
    if (last_pump_ - templates_tried_ >= k_template_retry)
      resend_templates(last_pump_);
    if (needs_templates_) {
      drop(msg);
      return;
    }
  }
  send_datagram(msg);
}

void collector_link::drop(const ipfix_message& msg) {
  ++stats_.messages_dropped;
  stats_.records_dropped += msg.data_records;
}

void collector_link::drop_queue() {
  for (const auto& p : queue_)
    drop(p.msg);
  queue_.clear();
  stats_.queued_bytes = 0;
}

void collector_link::close(clock::time_point deadline) {
  if (closed_)
    return;
  closed_ = true;
  // Paced UDP: what is queued goes out before the deadline, still paced (a burst at shutdown
  // would overflow the collector's buffer as any other would), faster only as the time left
  // demands.
  while (paced() && !udp_queue_.empty() && state_ == link_state::up) {
    auto now = clock::now();
    if (now >= deadline)
      break;
    double left_ms = std::chrono::duration<double, std::milli>(deadline - now).count();
    pace_per_ms_ = std::max(pace_per_ms_,
                            static_cast<double>(udp_queue_.size()) / std::max(1.0, left_ms * 0.8));
    pump_datagrams(now, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (const auto& m : udp_queue_)
    drop(m);
  udp_queue_.clear();
  while (is_tcp() && !queue_.empty() &&
         (state_ == link_state::connecting || state_ == link_state::up)) {
    auto now = clock::now();
    if (now >= deadline)
      break;
    int wait_ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1);
    last_now_ = now;
    if (state_ == link_state::connecting) {
      check_connect(now, wait_ms);
      continue;
    }
    flush();
    if (queue_.empty() || state_ != link_state::up)
      break;
    pollfd p{fd_.get(), POLLOUT, 0};
    ::poll(&p, 1, wait_ms);
  }
  drop_queue();
  fd_.reset();
  job_.reset();
  state_ = link_state::down;
}

collector_link_stats collector_link::stats() const {
  auto s = stats_;
  s.state = state_;
  return s;
}

std::string collector_link::describe() const {
  bool v6 = where_.family == AF_INET6;
  std::string out = is_tcp() ? "tcp " : "udp ";
  out += (v6 ? "[" + where_.host + "]" : where_.host) + ":" + std::to_string(where_.port) + " ";
  out += to_string(state_);
  out += ", sent " + std::to_string(stats_.messages_sent) + " messages (" +
         std::to_string(stats_.records_sent) + " records, " + std::to_string(stats_.bytes_sent) +
         " bytes), dropped " + std::to_string(stats_.messages_dropped) + " (" +
         std::to_string(stats_.records_dropped) + " records), " +
         std::to_string(stats_.reconnects) + " reconnects";
  if (is_tcp() || paced())
    out += ", " + std::to_string(stats_.queued_bytes) + " bytes queued";
  if (!stats_.last_error.empty())
    out += "; last error: " + stats_.last_error;
  return out;
}

std::variant<std::unique_ptr<collector_link>, std::string>
make_collector_link(std::string_view address, bool tcp, collector_link_options opts) {
  auto parsed = parse_collector_address(address);
  if (auto* err = std::get_if<std::string>(&parsed))
    return std::move(*err);
  return std::make_unique<collector_link>(std::move(std::get<collector_address>(parsed)),
                                          tcp ? collector_transport::tcp : collector_transport::udp,
                                          opts);
}

} // namespace netlens
