// The console's unix socket and its sessions: an accept thread, and one thread per session
// (at most max_sessions) that reads bounded lines, applies the byte checks and the rate limit,
// parses, and hands each command to the session's handler. No CAF here: the actor shell gives
// the handler, whose calls only send requests to actors.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <variant>

#include "actors/console/command_parser.hpp"
#include "flow/unique_fd.hpp"
#include "flow/wake_signal.hpp"

namespace netlens {

struct console_server_options {
  std::string socket_path;
  uint32_t allowed_uid = 0; // besides root; 0: root only
  uint32_t max_sessions = 8;
  uint32_t max_line_bytes = 4096;
  uint32_t max_commands_per_s = 20;
  // A session that sends no line within this is closed: connections that never speak must not
  // hold every session. Once it has sent one it may wait as long as it likes.
  uint32_t first_line_timeout_ms = 10000;
};

// What a configuration reload may change while the server runs; sessions already open keep
// the line and rate limits they started with.
struct console_server_limits {
  uint32_t max_sessions = 8;
  uint32_t max_line_bytes = 4096;
  uint32_t max_commands_per_s = 20;
  uint32_t first_line_timeout_ms = 10000;
};

// A session's connection as a command handler sees it.
class session_io {
public:
  virtual ~session_io() = default;
  // False once the peer is gone.
  virtual bool write(std::string_view text) = 0;
  enum class wait_result { input, timeout, closed, stopping };
  // Waits up to `timeout` for the peer to send something (a key during `top`); what it sent
  // is consumed.
  virtual wait_result wait_for_input(std::chrono::milliseconds timeout) = 0;
  // The server is stopping: a long command should end.
  virtual bool stopping() const = 0;
};

enum class command_status { ok, error, end_session };

// One per session, made by the factory when the session starts, used by its thread only.
class command_handler {
public:
  virtual ~command_handler() = default;
  virtual command_status run(const console_command& cmd, session_io& io) = 0;
};

struct console_server_counters {
  uint64_t sessions_total = 0;
  uint64_t sessions_open = 0;
  uint64_t sessions_refused = 0; // past max_sessions
  uint64_t peers_refused = 0;    // neither root nor allowed_uid
  uint64_t commands = 0;
  uint64_t commands_rejected = 0;  // too long, binary, unknown, malformed or over the rate
  uint64_t sessions_timed_out = 0; // sent no line within first_line_timeout_ms
};

class console_server {
public:
  using handler_factory = std::function<std::unique_ptr<command_handler>()>;

  // Binds the socket (mode 0600, owned by allowed_uid when set; parent directory created 0700,
  // 0711 when another uid must reach the socket). Refuses when another process serves on the
  // path; removes a stale socket left by a dead one.
  static std::variant<std::unique_ptr<console_server>, std::string>
  bind(console_server_options opts, handler_factory factory);
  ~console_server();
  void start();
  // Stops accepting, ends every session (a command in progress finishes first; handlers
  // check stopping()), joins every thread, removes the socket file. Idempotent.
  void stop();
  console_server_counters counters() const;
  void set_limits(const console_server_limits& limits);

private:
  struct session;
  console_server() = default;
  void accept_loop();
  void refuse(int fd, const std::string& why);
  void run_session(session& s);
  void reap_finished();

  console_server_limits limits() const;

  console_server_options opts_; // limits: read and written under counters_mutex_
  handler_factory factory_;
  unique_fd listen_fd_;
  wake_signal wake_; // stop: never cleared, so every session's poll sees it
  std::thread accept_thread_;
  std::atomic<bool> running_{false};
  std::atomic<bool> stopping_{false};
  std::list<std::unique_ptr<session>> sessions_; // accept thread only, and stop() after join
  mutable std::mutex counters_mutex_;
  console_server_counters counters_;
};

// Client side, for `netlens console` and tests: a connected socket or an error text.
std::variant<int, std::string> console_connect(const std::string& socket_path);

} // namespace netlens
