#include "actors/console/console_server.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "actors/common/private_socket.hpp"
#include "actors/console/console_protocol.hpp"
#include "actors/console/line_reader.hpp"
#include "actors/console/rate_limiter.hpp"
#include "flow/errno_text.hpp"
#include "flow/unique_fd.hpp"

namespace netlens {
namespace {

constexpr int k_send_timeout_ms = 2000; // a client that stops reading loses its session
constexpr int k_refuse_drain_ms = 100;

bool write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t w = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    text.remove_prefix(static_cast<size_t>(w));
  }
  return true;
}

class socket_session_io : public session_io {
public:
  socket_session_io(int fd, int wake_fd, const std::atomic<bool>& stopping, line_reader& reader)
      : fd_(fd), wake_fd_(wake_fd), stopping_(stopping), reader_(reader) {}

  bool write(std::string_view text) override {
    if (broken_)
      return false;
    broken_ = !write_all(fd_, text);
    return !broken_;
  }

  wait_result wait_for_input(std::chrono::milliseconds timeout) override {
    // A key typed right after the command may have come in the same read as the command.
    if (reader_.take_pending())
      return wait_result::input;
    pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int n;
    do
      n = poll(fds, 2, static_cast<int>(timeout.count()));
    while (n < 0 && errno == EINTR);
    if (n < 0 || fds[1].revents)
      return wait_result::stopping;
    if (n == 0)
      return wait_result::timeout;
    char buf[1024];
    ssize_t got = recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
    if (got <= 0 && !(got < 0 && (errno == EAGAIN || errno == EINTR)))
      return wait_result::closed;
    return wait_result::input;
  }

  bool stopping() const override { return stopping_.load(); }
  bool broken() const { return broken_; }

private:
  int fd_;
  int wake_fd_;
  const std::atomic<bool>& stopping_;
  line_reader& reader_;
  bool broken_ = false;
};

} // namespace

struct console_server::session {
  unique_fd fd;
  std::thread thread;
  std::atomic<bool> done{false};
};

std::variant<std::unique_ptr<console_server>, std::string>
console_server::bind(console_server_options opts, handler_factory factory) {
  const std::string path = opts.socket_path;
  auto listening = listen_private_socket(
      {path, opts.allowed_uid, 16, "another process is already serving a console on " + path});
  if (auto* err = std::get_if<std::string>(&listening))
    return *err;
  unique_fd listen_fd(std::get<int>(listening));
  std::unique_ptr<console_server> self(new console_server());
  self->opts_ = std::move(opts);
  self->factory_ = std::move(factory);
  auto wake = wake_signal::open();
  if (auto* err = std::get_if<std::string>(&wake)) {
    unlink(path.c_str());
    return *err;
  }
  self->wake_ = std::move(std::get<wake_signal>(wake));
  self->listen_fd_ = std::move(listen_fd);
  return self;
}

console_server::~console_server() {
  stop();
}

void console_server::start() {
  if (running_.exchange(true))
    return;
  accept_thread_ = std::thread([this] { accept_loop(); });
}

void console_server::stop() {
  stopping_ = true;
  if (running_.exchange(false) && wake_)
    wake_.notify(); // never cleared: every thread polling it sees the stop
  if (accept_thread_.joinable())
    accept_thread_.join();
  for (auto& s : sessions_)
    if (s->thread.joinable())
      s->thread.join();
  sessions_.clear();
  if (listen_fd_) {
    listen_fd_.reset();
    unlink(opts_.socket_path.c_str());
  }
}

console_server_counters console_server::counters() const {
  std::lock_guard<std::mutex> lock(counters_mutex_);
  return counters_;
}

void console_server::reap_finished() {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if ((*it)->done.load()) {
      (*it)->thread.join();
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
}

void console_server::refuse(int fd, const std::string& why) {
  timeval tv{0, k_refuse_drain_ms * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string text = "error: " + why + "\n";
  text += k_answer_error;
  write_all(fd, text);
  // Read what the client may have sent already: closing with unread data would turn into a
  // reset that could reach the client before the message does.
  // Bounded in time, so a peer that keeps sending cannot hold the accept thread.
  shutdown(fd, SHUT_WR);
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(k_refuse_drain_ms);
  char buf[512];
  while (std::chrono::steady_clock::now() < until && recv(fd, buf, sizeof(buf), 0) > 0) {
  }
}

void console_server::accept_loop() {
  pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_.fd(), POLLIN, 0}};
  while (running_.load()) {
    int n = poll(fds, 2, 1000);
    if (n < 0 && errno != EINTR)
      break;
    reap_finished();
    if (n <= 0)
      continue;
    if (fds[1].revents)
      break;
    if (!(fds[0].revents & POLLIN))
      continue;
    unique_fd fd(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (fd.get() < 0)
      continue;
    ucred peer{};
    socklen_t len = sizeof(peer);
    if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 ||
        (peer.uid != 0 && peer.uid != opts_.allowed_uid)) {
      {
        std::lock_guard<std::mutex> lock(counters_mutex_);
        ++counters_.peers_refused;
      }
      refuse(fd.get(), "uid " + std::to_string(peer.uid) +
                           " may not use the console (root only, or console.allowed_uid)");
      continue;
    }
    if (sessions_.size() >= limits().max_sessions) {
      {
        std::lock_guard<std::mutex> lock(counters_mutex_);
        ++counters_.sessions_refused;
      }
      refuse(fd.get(), std::to_string(sessions_.size()) +
                           " console sessions are open already (console.max_sessions); try "
                           "again later");
      continue;
    }
    auto s = std::make_unique<session>();
    s->fd = std::move(fd);
    session* raw = s.get();
    {
      std::lock_guard<std::mutex> lock(counters_mutex_);
      ++counters_.sessions_total;
      ++counters_.sessions_open;
    }
    sessions_.push_back(std::move(s));
    raw->thread = std::thread([this, raw] {
      run_session(*raw);
      raw->fd.reset();
      {
        std::lock_guard<std::mutex> lock(counters_mutex_);
        --counters_.sessions_open;
      }
      raw->done = true;
    });
  }
}

void console_server::run_session(session& s) {
  const int fd = s.fd.get();
  timeval tv{k_send_timeout_ms / 1000, (k_send_timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  const console_server_limits lim = limits();
  line_reader reader(lim.max_line_bytes);
  socket_session_io io(fd, wake_.fd(), stopping_, reader);
  std::unique_ptr<command_handler> handler = factory_();
  rate_limiter limiter(lim.max_commands_per_s, rate_limiter::clock::now());

  auto count = [&](bool rejected) {
    std::lock_guard<std::mutex> lock(counters_mutex_);
    ++counters_.commands;
    if (rejected)
      ++counters_.commands_rejected;
  };
  auto reject = [&](const std::string& why) {
    count(true);
    return io.write("error: " + why + "\n") && io.write(k_answer_error);
  };
  // Answers one line; false ends the session.
  auto answer = [&](const line_event& ev) -> bool {
    if (ev.too_long)
      return reject("line of " + std::to_string(ev.length) + " bytes is longer than " +
                    std::to_string(lim.max_line_bytes) + " (console.max_line_bytes)");
    if (is_blank(ev.line))
      return io.write(k_answer_ok);
    if (auto bad = check_line_bytes(ev.line))
      return reject(*bad);
    if (!limiter.allow(rate_limiter::clock::now()))
      return reject("more than " + std::to_string(limiter.per_second()) +
                    " commands per second (console.max_commands_per_s); slow down");
    auto parsed = parse_command(ev.line);
    if (auto* err = std::get_if<parse_error>(&parsed))
      return reject(err->message);
    auto& cmd = std::get<console_command>(parsed);
    count(false);
    if (cmd.kind == command_kind::quit) {
      io.write("bye\n");
      io.write(k_answer_ok);
      return false;
    }
    command_status status = handler->run(cmd, io);
    if (!io.write(status == command_status::error ? k_answer_error : k_answer_ok))
      return false;
    return status != command_status::end_session;
  };

  if (!io.write("netlens console: type help for the commands, quit to leave\n") ||
      !io.write(k_answer_ok))
    return;
  pollfd fds[2] = {{fd, POLLIN, 0}, {wake_.fd(), POLLIN, 0}};
  char buf[4096];
  // Until its first line the session has first_line_timeout_ms; then no deadline.
  bool spoke = false;
  const auto speak_by =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(lim.first_line_timeout_ms);
  while (!stopping_.load()) {
    int wait_ms = -1;
    if (!spoke) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      speak_by - std::chrono::steady_clock::now())
                      .count();
      wait_ms = static_cast<int>(std::max<int64_t>(left, 0));
    }
    int n = poll(fds, 2, wait_ms);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return;
    }
    if (fds[1].revents)
      return;
    if (n == 0) { // the first line's deadline passed
      {
        std::lock_guard<std::mutex> lock(counters_mutex_);
        ++counters_.sessions_timed_out;
      }
      io.write("error: no command within " + std::to_string(lim.first_line_timeout_ms) +
               " ms (console.first_command_timeout_ms); closing the session\n");
      io.write(k_answer_error);
      return;
    }
    ssize_t got = recv(fd, buf, sizeof(buf), 0);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      return;
    reader.feed(std::string_view(buf, static_cast<size_t>(got)));
    while (auto ev = reader.next()) {
      spoke = true;
      if (!answer(*ev) || io.broken())
        return;
    }
  }
}

console_server_limits console_server::limits() const {
  std::lock_guard<std::mutex> lock(counters_mutex_);
  return {opts_.max_sessions, opts_.max_line_bytes, opts_.max_commands_per_s,
          opts_.first_line_timeout_ms};
}

void console_server::set_limits(const console_server_limits& limits) {
  std::lock_guard<std::mutex> lock(counters_mutex_);
  opts_.max_sessions = limits.max_sessions;
  opts_.max_line_bytes = limits.max_line_bytes;
  opts_.max_commands_per_s = limits.max_commands_per_s;
  opts_.first_line_timeout_ms = limits.first_line_timeout_ms;
}

std::variant<int, std::string> console_connect(const std::string& socket_path) {
  sockaddr_un addr;
  if (!fill_unix_addr(socket_path, addr))
    return "console socket path too long: " + socket_path;
  unique_fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0)
    return "socket(): " + errno_text();
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    return "cannot connect to " + socket_path + ": " + errno_text() + " (is netlens running?)";
  return fd.release();
}

} // namespace netlens
