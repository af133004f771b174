// One IPFIX transport session to one collector (UDP or TCP) that never blocks its caller: the
// exporter actor owns one per configured collector and drives it from its timer. A collector
// that is down costs counted drops and a bounded queue, never a stall.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <sys/socket.h>
#include <variant>
#include <vector>

#include "actors/exporter/ipfix_encoder.hpp"
#include "config/collector_address.hpp"
#include "flow/unique_fd.hpp"

namespace netlens {

// resolving: waiting for getaddrinfo; connecting: TCP handshake under way; backoff: waiting to
// try again after a failure; down: not started yet, or closed.
enum class link_state { down, resolving, connecting, up, backoff };

enum class collector_transport { udp, tcp };

const char* to_string(link_state s);

struct collector_link_options {
  // TCP: bytes waiting while the collector is slow or away. A message that does not fit is
  // dropped (the newest goes: a message partly written is never cut).
  size_t queue_bound_bytes = 1 << 20;
  std::chrono::milliseconds initial_backoff{1000}; // doubles per failure up to max_backoff
  std::chrono::milliseconds max_backoff{30000};
  // A TCP handshake into a black hole would otherwise wait for the kernel's SYN retries (~2 min).
  std::chrono::milliseconds connect_timeout{5000};
  // UDP: 0 sends each message at once. Otherwise messages wait in the queue (queue_bound_bytes)
  // and go out spread over this window, a few per poll: a collector's socket buffer (208 KiB by
  // default on Linux) overflows under a burst of thousands of datagrams, which it would read
  // in time if they came evenly. Polls should then come every ~5 ms while backlog() holds: a
  // poll sends at most 10 ms of the pace.
  std::chrono::milliseconds pace_window{0};
};

struct collector_link_stats {
  link_state state = link_state::down;
  std::string last_error; // with errno text; kept after recovery so an operator sees the cause
  uint64_t messages_sent = 0;
  uint64_t bytes_sent = 0;
  uint64_t records_sent = 0;
  uint64_t messages_dropped = 0;
  uint64_t records_dropped = 0;
  uint64_t reconnects = 0; // sessions established after the first
  uint64_t queued_bytes = 0;
};

// Headers: the link stamps the export time (when the message starts going out) and the sequence
// number, the count of data records sent earlier in the same transport session (a TCP
// connection, or the UDP socket's life). Every new TCP connection starts at 0 and needs the
// templates again.
//
// Template contract: while needs_templates() is true a data message is dropped (counted), since
// the collector could not decode it. The caller then sends its templates_only messages first:
// the first clears the flag, the others follow it in order. The flag is set at start, after a
// UDP send error (the collector may have restarted) and when a TCP session is lost.
//
// TCP data queued for a session that is lost is dropped (counted) with it: its templates went
// out on the old connection. What is queued while no session is up waits for the next one; by
// the contract it starts with its templates.
//
// Host names are resolved on a short-lived thread of their own (getaddrinfo may wait seconds on
// DNS); IP literals are resolved inline with AI_NUMERICHOST, which never blocks.
class collector_link {
public:
  using clock = std::chrono::steady_clock;

  // No I/O here: the first poll or send starts the session.
  collector_link(collector_address where, collector_transport transport,
                 collector_link_options opts = {});
  collector_link(collector_link&&) = default;
  collector_link& operator=(collector_link&&) = default;
  collector_link(const collector_link&) = delete;
  collector_link& operator=(const collector_link&) = delete;

  // Drives resolving, connect completion, reconnect timing, peer-close detection and the TCP
  // queue. Call it on a timer (~100 ms) with a monotonic now; it never waits.
  void poll(clock::time_point now);

  // Sends msg, or queues it (TCP), or drops and counts it. Never waits.
  void send(ipfix_message msg, clock::time_point now);

  // Paced UDP keeps the last templates it was given and sends them again by itself in front of
  // the next data after a send error; it needs them from the caller only until it has some.
  bool needs_templates() const { return paced() ? templates_.empty() : needs_templates_; }

  // Messages wait to go out: poll soon.
  bool backlog() const { return !queue_.empty() || !udp_queue_.empty(); }

  // Tries until deadline (this one call may wait that long) to write what is queued, then
  // closes. What is left is counted as dropped; later sends are dropped, polls do nothing.
  void close(clock::time_point deadline);

  collector_link_stats stats() const;
  // One line for logs and the API, e.g. "tcp 127.0.0.1:4739 up, 10 sent (...)".
  std::string describe() const;

private:
  struct pending {
    ipfix_message msg;
    size_t offset = 0;    // bytes already written; > 0 only for the head of the queue
    bool stamped = false; // sequence number written and counted (once, even if EAGAIN follows)
  };

  struct endpoint {
    sockaddr_storage addr{};
    socklen_t len = 0;
    int family = 0;
  };

  struct resolve_job; // shared with the resolver thread, which may outlive the link

  void start_attempt(clock::time_point now);
  void on_resolved(std::vector<endpoint> addrs, clock::time_point now);
  void try_connect(clock::time_point now);
  void check_connect(clock::time_point now, int wait_ms);
  void on_connected();
  void attempt_failed(std::string error, clock::time_point now);
  void lose_session(std::string error);
  void check_peer();
  void flush();
  void send_datagram(ipfix_message& msg);
  void drop(const ipfix_message& msg);
  void drop_queue();
  bool is_tcp() const { return transport_ == collector_transport::tcp; }
  bool paced() const { return !is_tcp() && opts_.pace_window.count() > 0; }
  void queue_datagram(ipfix_message msg, clock::time_point now);
  void pump_datagrams(clock::time_point now, size_t at_least);
  void send_paced(ipfix_message& msg);
  void take_pending_error();
  void note_arrival(clock::time_point now);
  double arrival_per_ms(clock::time_point now);
  void probe_if_due(clock::time_point now);
  void resend_templates(clock::time_point now);
  void note_send_error(int err);

  collector_address where_;
  collector_transport transport_;
  collector_link_options opts_;
  link_state state_ = link_state::down;
  bool closed_ = false;
  bool ever_up_ = false;
  bool needs_templates_ = true;
  unique_fd fd_;
  std::shared_ptr<resolve_job> job_;
  std::vector<endpoint> addrs_;
  size_t next_addr_ = 0;
  std::string attempt_error_; // the last address's failure while others are still tried
  clock::time_point last_now_{};
  clock::time_point connect_deadline_{};
  clock::time_point retry_at_{};
  std::chrono::milliseconds backoff_;
  ipfix_sequence sequence_; // of this session
  std::deque<pending> queue_;
  // Paced UDP: datagrams waiting, the templates last given (sent again after an error), and the
  // pace: messages per millisecond so the backlog leaves within the window, with the credit
  // not yet spent.
  std::deque<ipfix_message> udp_queue_;
  std::vector<ipfix_message> templates_;
  bool last_was_templates_ = false;
  double pace_per_ms_ = 0;
  double pace_credit_ = 0;
  clock::time_point last_pump_{};
  clock::time_point templates_tried_{};
  // Paced UDP: messages queued in the last pace window, in 10 ms buckets (start, count).
  std::deque<std::pair<clock::time_point, uint32_t>> arrivals_;
  uint64_t arrivals_in_window_ = 0;
  // Paced UDP: the collector's last word was a refusal (ICMP unreachable). Data is dropped as it
  // comes instead of waiting its pace to be dropped then, so a collector that is away costs no
  // memory; the templates go every k_template_retry as a probe, and data flows again once one
  // goes unrefused.
  bool refused_ = false;
  collector_link_stats stats_;
};

// A link to the collector written as "host:port" (config/collector_address.hpp), or the
// parser's word on what is wrong with it.
std::variant<std::unique_ptr<collector_link>, std::string>
make_collector_link(std::string_view address, bool tcp, collector_link_options opts = {});

} // namespace netlens
