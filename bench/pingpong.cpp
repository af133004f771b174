// Request/response on persistent loopback TCP connections, to measure what tracing costs an
// application that keeps its connections open and only sends and receives: the state programs
// never run after the connect, every event is a send or a receive that carries data.
//
// --pairs N (default 2) connections, each driven by a client thread and served by a server
// thread of its own, both blocking: the client sends a --size byte request (default 64) and
// reads the --size byte reply, the server reads the request and sends the reply, in a loop for
// --duration seconds. The connections are opened (and one round trip done on each) before the
// clock starts, so only round trips are timed. TCP_NODELAY on both ends.
// --pin same puts both threads of pair p on the p-th CPU the process may use (wake-ups stay on
// one CPU); split puts the server on the next CPU (every wake-up crosses CPUs); none (the
// default) leaves placement to the scheduler.
//
//   bench_pingpong [--duration S] [--pairs N] [--size BYTES] [--pin none|same|split]
// The last line is machine-readable:
//   "RESULT mode=pingpong pairs=N round_trips=... seconds=... rt_per_s=... errors=... cpu_s=..."
// (cpu_s: user + system time of the whole process, set-up included).
#include "bench/loopback.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using netlens::bench::k_localhost;
using netlens::bench::v4;

namespace {

struct options {
  double duration_s = 5;
  int pairs = 2;
  size_t size = 64;
  std::string pin = "none"; // none | same | split
};

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--duration S] [--pairs N] [--size BYTES] [--pin none|same|split]\n",
               argv0);
  std::exit(2);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc)
        usage(argv[0]);
      return argv[++i];
    };
    if (a == "--duration")
      o.duration_s = std::atof(value());
    else if (a == "--pairs")
      o.pairs = std::atoi(value());
    else if (a == "--size")
      o.size = static_cast<size_t>(std::atol(value()));
    else if (a == "--pin")
      o.pin = value();
    else
      usage(argv[0]);
  }
  if (o.duration_s <= 0 || o.pairs < 1 || o.pairs > 256 || o.size < 1 || o.size > 65536 ||
      (o.pin != "none" && o.pin != "same" && o.pin != "split"))
    usage(argv[0]);
  return o;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "bench_pingpong: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

std::atomic<bool> g_stop{false};

// One counter per thread, each on its own cache line.
struct alignas(64) thread_count {
  uint64_t done = 0;
  uint64_t errors = 0;
};

// Blocking send of all of buf; false on error or a closed peer.
bool send_all(int fd, const char* buf, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    buf += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

// Blocking receive of exactly len bytes; 1 when they came, 0 on end-of-file, -1 on error.
int recv_all(int fd, char* buf, size_t len) {
  while (len > 0) {
    ssize_t n = recv(fd, buf, len, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n == 0)
      return 0;
    buf += n;
    len -= static_cast<size_t>(n);
  }
  return 1;
}

// Pins the calling thread to one CPU (of those it may run on); false if that failed.
bool pin_to(int nth_allowed) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
    return false;
  int count = CPU_COUNT(&allowed);
  int want = nth_allowed % count;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed) || want-- > 0)
      continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    return sched_setaffinity(0, sizeof(one), &one) == 0;
  }
  return false;
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Answers every request until the client closes its end.
void server(int fd, size_t size, int cpu, thread_count* count) {
  if (cpu >= 0 && !pin_to(cpu))
    ++count->errors;
  std::vector<char> request(size);
  std::vector<char> reply(size, 'r');
  for (;;) {
    int got = recv_all(fd, request.data(), size);
    if (got == 0)
      break;
    if (got < 0 || !send_all(fd, reply.data(), size)) {
      ++count->errors;
      break;
    }
    ++count->done;
  }
  close(fd);
}

bool round_trip(int fd, const std::vector<char>& request, std::vector<char>& reply) {
  return send_all(fd, request.data(), request.size()) &&
         recv_all(fd, reply.data(), reply.size()) == 1;
}

void client(int fd, size_t size, int cpu, thread_count* count) {
  if (cpu >= 0 && !pin_to(cpu))
    ++count->errors;
  std::vector<char> request(size, 'q');
  std::vector<char> reply(size);
  while (!g_stop.load(std::memory_order_relaxed)) {
    if (!round_trip(fd, request, reply)) {
      ++count->errors;
      break;
    }
    ++count->done;
  }
  close(fd); // the server sees end-of-file and ends
}

} // namespace

int main(int argc, char** argv) {
  options o = parse(argc, argv);

  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0)
    die("socket");
  sockaddr_in addr = v4(k_localhost, 0);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    die("bind");
  if (listen(listener, 256) != 0)
    die("listen");
  socklen_t len = sizeof(addr);
  if (getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    die("getsockname");

  // Connect every pair and do one round trip on each before the clock starts.
  std::vector<int> client_fds, server_fds;
  std::vector<char> request(o.size, 'q'), reply(o.size), buf(o.size);
  for (int p = 0; p < o.pairs; ++p) {
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0)
      die("socket");
    if (connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
      die("connect");
    int s = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (s < 0)
      die("accept");
    set_nodelay(c);
    set_nodelay(s);
    if (!send_all(c, request.data(), o.size) || recv_all(s, buf.data(), o.size) != 1 ||
        !send_all(s, buf.data(), o.size) || recv_all(c, reply.data(), o.size) != 1)
      die("first round trip");
    client_fds.push_back(c);
    server_fds.push_back(s);
  }
  close(listener);

  std::vector<thread_count> client_counts(static_cast<size_t>(o.pairs));
  std::vector<thread_count> server_counts(static_cast<size_t>(o.pairs));
  std::vector<std::thread> servers, clients;
  // --pin same: both ends of pair p on the p-th CPU; split: the server on the next one.
  auto client_cpu = [&](int p) { return o.pin == "none" ? -1 : p; };
  auto server_cpu = [&](int p) { return o.pin == "none" ? -1 : o.pin == "same" ? p : p + 1; };
  for (int p = 0; p < o.pairs; ++p)
    servers.emplace_back(server, server_fds[static_cast<size_t>(p)], o.size, server_cpu(p),
                         &server_counts[static_cast<size_t>(p)]);
  auto started = std::chrono::steady_clock::now();
  for (int p = 0; p < o.pairs; ++p)
    clients.emplace_back(client, client_fds[static_cast<size_t>(p)], o.size, client_cpu(p),
                         &client_counts[static_cast<size_t>(p)]);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.duration_s));
  g_stop = true;
  for (auto& t : clients)
    t.join();
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  for (auto& t : servers)
    t.join();

  uint64_t done = 0, errors = 0, served = 0;
  for (const auto& c : client_counts) {
    done += c.done;
    errors += c.errors;
  }
  for (const auto& c : server_counts) {
    served += c.done;
    errors += c.errors;
  }
  std::printf("round trips: %llu in %.2f s = %.0f/s (%d pairs, %zu B request and reply,"
              " pin %s; server answered %llu)\n",
              static_cast<unsigned long long>(done), seconds, done / seconds, o.pairs, o.size,
              o.pin.c_str(), static_cast<unsigned long long>(served));
  // CPU time of this process (its softirq work included): beside the machine's busy time it
  // shows whether something else ran meanwhile.
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  double cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  std::printf("RESULT mode=pingpong pairs=%d round_trips=%llu seconds=%.3f rt_per_s=%.0f"
              " errors=%llu cpu_s=%.3f\n",
              o.pairs, static_cast<unsigned long long>(done), seconds, done / seconds,
              static_cast<unsigned long long>(errors), cpu_s);
  return errors == 0 ? 0 : 1;
}
