#include "apps/netlens/console_client.hpp"

#include <cerrno>
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>
#include <variant>
#include <vector>

#include <readline/history.h>
#include <readline/readline.h>

#include "actors/console/console_protocol.hpp"
#include "actors/console/console_server.hpp"

namespace netlens {
namespace {

enum class answer_status { ok, error, closed };

// The socket to the agent and the bytes read past the last complete line.
class console_connection {
public:
  explicit console_connection(int fd) : fd_(fd) {}
  ~console_connection() { ::close(fd_); }
  console_connection(const console_connection&) = delete;
  console_connection& operator=(const console_connection&) = delete;

  int fd() const { return fd_; }

  bool send_line(const std::string& line) {
    std::string data = line + "\n";
    std::string_view rest = data;
    while (!rest.empty()) {
      ssize_t w = ::send(fd_, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        return false;
      rest.remove_prefix(static_cast<size_t>(w));
    }
    return true;
  }

  // Reads one answer, handing each line (newline included) to on_line as it arrives.
  // on_input runs whenever `input_fd` is readable while waiting (top's key press); once it
  // returns false that fd is no longer watched.
  answer_status read_answer(const std::function<void(const std::string&)>& on_line,
                            int input_fd = -1, const std::function<bool()>& on_input = {}) {
    for (;;) {
      size_t nl;
      while ((nl = pending_.find('\n')) != std::string::npos) {
        std::string line = pending_.substr(0, nl + 1);
        pending_.erase(0, nl + 1);
        if (!line.empty() && line[0] == k_answer_end)
          return line.compare(0, k_answer_ok.size(), k_answer_ok) == 0 ? answer_status::ok
                                                                       : answer_status::error;
        on_line(line);
      }
      pollfd fds[2] = {{fd_, POLLIN, 0}, {input_fd, POLLIN, 0}};
      int n = poll(fds, input_fd >= 0 ? 2 : 1, -1);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        return answer_status::closed;
      }
      if (input_fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) &&
          !(on_input && on_input()))
        input_fd = -1;
      if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
        continue;
      char buf[8192];
      ssize_t got = recv(fd_, buf, sizeof(buf), 0);
      if (got < 0 && errno == EINTR)
        continue;
      if (got <= 0) {
        // What came without a newline is still shown.
        if (!pending_.empty())
          on_line(pending_ + "\n");
        pending_.clear();
        return answer_status::closed;
      }
      pending_.append(buf, static_cast<size_t>(got));
    }
  }

  // Asks and collects the answer's lines without their newlines; nothing on failure.
  std::vector<std::string> ask(const std::string& command) {
    std::vector<std::string> lines;
    if (!send_line(command))
      return lines;
    if (read_answer([&](const std::string& l) { lines.push_back(l.substr(0, l.size() - 1)); }) !=
        answer_status::ok)
      lines.clear();
    return lines;
  }

private:
  int fd_;
  std::string pending_;
};

void print_line(const std::string& line) {
  FILE* to = line.rfind("error: ", 0) == 0 ? stderr : stdout;
  std::fwrite(line.data(), 1, line.size(), to);
  std::fflush(to);
}

// While `top` runs, the terminal hands over single key presses without echo.
class raw_terminal {
public:
  raw_terminal() {
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_) != 0)
      return;
    termios raw = saved_;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    active_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  ~raw_terminal() {
    if (active_)
      tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  raw_terminal(const raw_terminal&) = delete;
  raw_terminal& operator=(const raw_terminal&) = delete;

private:
  termios saved_{};
  bool active_ = false;
};

// Runs one command and prints its answer as it arrives. `top` sends a line when a key is
// pressed, which ends it.
answer_status run_command(console_connection& conn, const std::string& line) {
  if (!conn.send_line(line))
    return answer_status::closed;
  auto words_start = line.find_first_not_of(" \t");
  bool top = words_start != std::string::npos && line.compare(words_start, 3, "top") == 0 &&
             line.find_first_not_of(" \t", words_start + 3) == std::string::npos;
  if (!top)
    return conn.read_answer(print_line);
  raw_terminal raw;
  bool key_sent = false;
  return conn.read_answer(print_line, STDIN_FILENO, [&] {
    char buf[64];
    ssize_t got = read(STDIN_FILENO, buf, sizeof(buf));
    if (got <= 0)
      return false; // end of input: no key will come from there
    if (!key_sent)
      key_sent = conn.send_line("");
    return true;
  });
}

// --- readline completion, asked of the server -------------------------------------------------

console_connection* g_completion_conn = nullptr;
std::vector<std::string> g_candidates;

char* next_candidate(const char*, int state) {
  static size_t index = 0;
  if (state == 0)
    index = 0;
  if (index < g_candidates.size())
    return strdup(g_candidates[index++].c_str());
  return nullptr;
}

char** complete_line(const char* text, int, int) {
  rl_attempted_completion_over = 1; // never fall back to file names
  g_candidates.clear();
  if (g_completion_conn) {
    std::string typed(rl_line_buffer, static_cast<size_t>(rl_point));
    g_candidates = g_completion_conn->ask("complete " + typed);
  }
  // A filter key ends with '=': its value follows without a space.
  rl_completion_append_character =
      g_candidates.size() == 1 && !g_candidates[0].empty() && g_candidates[0].back() == '=' ? '\0'
                                                                                            : ' ';
  return rl_completion_matches(text, next_candidate);
}

} // namespace

int run_console_client(const std::string& socket_path, const std::string& command) {
  auto connected = console_connect(socket_path);
  if (auto* err = std::get_if<std::string>(&connected)) {
    std::fprintf(stderr, "netlens: %s\n", err->c_str());
    return 1;
  }
  console_connection conn(std::get<int>(connected));
  bool interactive = command.empty();
  // The greeting, or why the session was refused.
  auto greeting = conn.read_answer([&](const std::string& line) {
    if (interactive || line.rfind("error: ", 0) == 0)
      print_line(line);
  });
  if (greeting != answer_status::ok)
    return 1;
  // A blank line at once: the server closes sessions that send nothing within
  // console.first_command_timeout_ms, and an operator may take longer to type the first command.
  if (interactive && run_command(conn, "") != answer_status::ok) {
    std::fprintf(stderr, "netlens: the agent closed the session\n");
    return 1;
  }

  if (!interactive) {
    answer_status status = run_command(conn, command);
    if (status == answer_status::closed)
      std::fprintf(stderr, "netlens: the agent closed the session before answering\n");
    return status == answer_status::ok ? 0 : 1;
  }

  // readline reads multibyte characters only in the user's locale; in the C locale it would
  // turn a UTF-8 byte into Meta plus a key instead of sending it on.
  std::setlocale(LC_CTYPE, "");
  g_completion_conn = &conn;
  rl_attempted_completion_function = complete_line;
  rl_basic_word_break_characters = const_cast<char*>(" \t");
  for (;;) {
    char* raw = readline("netlens> ");
    if (!raw) { // Ctrl-D
      std::printf("\n");
      break;
    }
    std::string line(raw);
    std::free(raw);
    if (line.find_first_not_of(" \t") != std::string::npos)
      add_history(line.c_str());
    answer_status status = run_command(conn, line);
    if (status == answer_status::closed) {
      std::fprintf(stderr, "netlens: the agent closed the session\n");
      return 1;
    }
    auto first = line.find_first_not_of(" \t");
    std::string word = first == std::string::npos
                           ? ""
                           : line.substr(first, line.find_first_of(" \t", first) - first);
    if (status == answer_status::ok && (word == "quit" || word == "shutdown"))
      break; // the server ends the session after these
  }
  g_completion_conn = nullptr;
  return 0;
}

} // namespace netlens
