// The console server on a real unix socket, with a handler that answers without any actor:
// greeting, answers and their end markers, refusals that keep the session usable, the session
// bound, and a stop that ends open sessions.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "actors/console/console_protocol.hpp"
#include "actors/console/console_server.hpp"

using namespace netlens;

namespace {

class echo_handler : public command_handler {
public:
  command_status run(const console_command& cmd, session_io& io) override {
    if (cmd.kind == command_kind::top) {
      // Like top: frames until a key.
      for (;;) {
        io.write("frame\n");
        auto w = io.wait_for_input(std::chrono::milliseconds(20));
        if (w != session_io::wait_result::timeout)
          return command_status::ok;
      }
    }
    if (cmd.kind == command_kind::shutdown) {
      io.write("bye for good\n");
      return command_status::end_session;
    }
    if (cmd.kind == command_kind::inspect && cmd.argument == "nobody") {
      io.write("error: no actor named 'nobody'\n");
      return command_status::error;
    }
    io.write("ran " + std::to_string(static_cast<int>(cmd.kind)) + "\n");
    return command_status::ok;
  }
};

struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/netlens-console-test-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~temp_dir() { (void)!std::system(("rm -rf " + path).c_str()); }
};

struct client {
  int fd = -1;
  std::string pending;
  explicit client(const std::string& path) {
    auto c = console_connect(path);
    REQUIRE(std::holds_alternative<int>(c));
    fd = std::get<int>(c);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~client() { ::close(fd); }
  void send(const std::string& bytes) {
    REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(bytes.size()));
  }
  // Lines up to the end marker; the last element is "ok", "error" or "closed".
  std::vector<std::string> answer() {
    std::vector<std::string> lines;
    for (;;) {
      size_t nl;
      while ((nl = pending.find('\n')) != std::string::npos) {
        std::string line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        if (!line.empty() && line[0] == k_answer_end) {
          lines.push_back(line.substr(1));
          return lines;
        }
        lines.push_back(line);
      }
      char buf[4096];
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) {
        lines.push_back("closed");
        return lines;
      }
      pending.append(buf, static_cast<size_t>(n));
    }
  }
  // Reads until `text` has arrived (left in pending for answer()).
  bool wait_for(const std::string& text) {
    while (pending.find(text) == std::string::npos) {
      char buf[4096];
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0)
        return false;
      pending.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  std::vector<std::string> ask(const std::string& line) {
    send(line + "\n");
    return answer();
  }
};

std::unique_ptr<console_server> start_server(const std::string& path,
                                             console_server_options opts = {}) {
  opts.socket_path = path;
  auto bound = console_server::bind(opts, [] { return std::make_unique<echo_handler>(); });
  if (auto* err = std::get_if<std::string>(&bound))
    FAIL(*err);
  auto server = std::move(std::get<0>(bound));
  server->start();
  return server;
}

} // namespace

TEST_CASE("a session is greeted, answered, and each answer ends with its marker", "[console]") {
  temp_dir dir;
  std::string path = dir.path + "/run/console.sock";
  auto server = start_server(path);
  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  client c(path);
  auto hello = c.answer();
  CHECK(hello.front().find("netlens console") == 0);
  CHECK(hello.back() == "ok");
  CHECK(c.ask("actors") == std::vector<std::string>{"ran 1", "ok"});
  CHECK(c.ask("") == std::vector<std::string>{"ok"});
  CHECK(c.ask("inspect nobody").back() == "error");
  auto bad = c.ask("frobnicate");
  CHECK(bad.front() == "error: unknown command 'frobnicate' (type help for the list)");
  CHECK(bad.back() == "error");
  CHECK(c.ask("quit") == std::vector<std::string>{"bye", "ok"});
  CHECK(c.answer().back() == "closed");
  server->stop();
  CHECK(access(path.c_str(), F_OK) != 0); // the socket file goes with the server
}

TEST_CASE("over-long lines and binary input are refused and the session goes on", "[console]") {
  temp_dir dir;
  console_server_options opts;
  opts.max_line_bytes = 64;
  auto server = start_server(dir.path + "/c.sock", opts);
  client c(dir.path + "/c.sock");
  c.answer();
  auto longer = c.ask(std::string(10000, 'a'));
  CHECK(longer.front() == "error: line of 10000 bytes is longer than 64 (console.max_line_bytes)");
  CHECK(longer.back() == "error");
  auto binary = c.ask(std::string("\x00\x01\xff\xfe", 4));
  CHECK(binary.front().find("error: control byte 0x00 at column 1") == 0);
  CHECK(c.ask("actors").back() == "ok");
  auto counters = server->counters();
  CHECK(counters.commands_rejected == 2);
  CHECK(counters.commands == 3);
}

TEST_CASE("commands beyond the per-session rate are refused", "[console]") {
  temp_dir dir;
  console_server_options opts;
  opts.max_commands_per_s = 3;
  auto server = start_server(dir.path + "/c.sock", opts);
  client c(dir.path + "/c.sock");
  c.answer();
  c.send("actors\nactors\nactors\nactors\nactors\n");
  int ok = 0, limited = 0;
  for (int i = 0; i < 5; ++i) {
    auto a = c.answer();
    if (a.back() == "ok")
      ++ok;
    else if (a.front().find("commands per second (console.max_commands_per_s)") !=
             std::string::npos)
      ++limited;
  }
  CHECK(ok == 3);
  CHECK(limited == 2);
  // Another session has its own bucket.
  client other(dir.path + "/c.sock");
  other.answer();
  CHECK(other.ask("actors").back() == "ok");
}

TEST_CASE("sessions run at once up to the bound, one more is refused with a message", "[console]") {
  temp_dir dir;
  console_server_options opts;
  opts.max_sessions = 2;
  auto server = start_server(dir.path + "/c.sock", opts);
  client a(dir.path + "/c.sock");
  client b(dir.path + "/c.sock");
  a.answer();
  b.answer();
  // a is inside a long command while b is answered.
  a.send("top\n");
  CHECK(b.ask("config").back() == "ok");
  client c(dir.path + "/c.sock");
  auto refused = c.answer();
  CHECK(refused.front().find("error: 2 console sessions are open already") == 0);
  CHECK(refused.back() == "error");
  a.send("\n"); // the key that ends top
  auto frames = a.answer();
  CHECK(frames.front() == "frame");
  CHECK(frames.back() == "ok");
  CHECK(server->counters().sessions_refused == 1);
  // A session that ends frees its place.
  CHECK(b.ask("quit").back() == "ok");
  for (int i = 0; i < 100 && server->counters().sessions_open > 1; ++i)
    usleep(10000);
  client d(dir.path + "/c.sock");
  CHECK(d.answer().back() == "ok");
}

TEST_CASE("a key sent in the same packet as top ends it at once", "[console]") {
  // The session reads "top\n\n" in one recv: the key is already in its line reader, not on the
  // socket, and top must see it there. (Seen as a hang on a loaded machine, where the session
  // thread read the command only after the key had arrived.)
  temp_dir dir;
  auto server = start_server(dir.path + "/c.sock");
  client a(dir.path + "/c.sock");
  a.answer();
  a.send("top\n\n");
  // Bounded: were the key missed, frames would come every 20 ms for ever.
  size_t frames = 0;
  bool ended = false;
  while (!ended && frames < 200) {
    char buf[4096];
    ssize_t n = recv(a.fd, buf, sizeof(buf), 0);
    REQUIRE(n > 0);
    a.pending.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = a.pending.find('\n')) != std::string::npos) {
      std::string line = a.pending.substr(0, nl);
      a.pending.erase(0, nl + 1);
      if (line == "frame")
        ++frames;
      else if (!line.empty() && line[0] == k_answer_end) {
        CHECK(line.substr(1) == "ok");
        ended = true;
      }
    }
  }
  CHECK(ended);
  CHECK(frames == 1);
  CHECK(a.ask("config").back() == "ok");
}

TEST_CASE("a command can end its session, stop ends the sessions still open", "[console]") {
  temp_dir dir;
  auto server = start_server(dir.path + "/c.sock");
  client a(dir.path + "/c.sock");
  a.answer();
  CHECK(a.ask("shutdown") == std::vector<std::string>{"bye for good", "ok"});
  CHECK(a.answer().back() == "closed");
  client b(dir.path + "/c.sock");
  b.answer();
  b.send("top\n");
  REQUIRE(b.wait_for("frame\n"));
  server->stop(); // joins b's thread, which is inside top
  auto rest = b.answer();
  CHECK(rest.back() == "ok");
  CHECK(b.answer().back() == "closed");
}

TEST_CASE("a second server on a live socket is refused, a stale socket is replaced", "[console]") {
  temp_dir dir;
  std::string path = dir.path + "/c.sock";
  auto first = start_server(path);
  console_server_options opts;
  opts.socket_path = path;
  auto second = console_server::bind(opts, [] { return std::make_unique<echo_handler>(); });
  REQUIRE(std::holds_alternative<std::string>(second));
  CHECK(std::get<std::string>(second).find("already serving a console") != std::string::npos);
  // A socket file nobody answers on (a killed agent's) is taken over.
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string stale = dir.path + "/stale.sock";
  std::strcpy(addr.sun_path, stale.c_str());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  ::close(fd);
  auto third = start_server(stale);
  client c(stale);
  CHECK(c.answer().back() == "ok");
}

TEST_CASE("silent connections are closed at the first-line deadline, a used session stays",
          "[console]") {
  temp_dir dir;
  console_server_options opts;
  opts.max_sessions = 2;
  opts.first_line_timeout_ms = 300;
  auto server = start_server(dir.path + "/c.sock", opts);
  client used(dir.path + "/c.sock");
  client silent(dir.path + "/c.sock");
  REQUIRE(used.answer().back() == "ok");
  REQUIRE(silent.answer().back() == "ok");
  CHECK(used.ask("").back() == "ok"); // a blank line: the session has spoken
  // Every slot is taken; the silent one is cut at its deadline with a message that names it.
  auto t0 = std::chrono::steady_clock::now();
  auto cut = silent.answer();
  auto waited = std::chrono::steady_clock::now() - t0;
  REQUIRE(cut.size() >= 2);
  CHECK(cut.front().find("error: no command within 300 ms (console.first_command_timeout_ms)") ==
        0);
  CHECK(cut.back() == "error");
  CHECK(silent.answer().back() == "closed");
  CHECK(waited < std::chrono::seconds(3));
  CHECK(server->counters().sessions_timed_out == 1);
  // Its slot is free again, and the session that spoke is still served well past the deadline.
  usleep(400000);
  CHECK(used.ask("config").back() == "ok");
  for (int i = 0; i < 100 && server->counters().sessions_open > 1; ++i)
    usleep(10000);
  client next(dir.path + "/c.sock");
  CHECK(next.answer().back() == "ok");
}

TEST_CASE("new limits apply to the sessions that start after them", "[console]") {
  temp_dir dir;
  console_server_options opts;
  opts.max_sessions = 1;
  auto server = start_server(dir.path + "/c.sock", opts);
  client a(dir.path + "/c.sock");
  REQUIRE(a.answer().back() == "ok");
  {
    client refused(dir.path + "/c.sock");
    CHECK(refused.answer().back() == "error");
  }
  server->set_limits({2, 4096, 20, 10000});
  client b(dir.path + "/c.sock");
  CHECK(b.answer().back() == "ok");
  CHECK(b.ask("config").back() == "ok");
}
