// Opens many concurrent established loopback TCP connections, sends a few bytes on each (and
// reads them on the server side) so a tracer sees traffic on every socket, then holds them
// until it reads a line or end-of-file on stdin (or gets SIGTERM/SIGINT), closes them all and
// exits. Both ends live in the helper, so N connections are 2N sockets and 2N descriptors; when
// RLIMIT_NOFILE's hard limit is lower than that (it cannot be raised without CAP_SYS_RESOURCE)
// the connections are spread over several worker processes forked for the purpose.
//
// Client sockets bind to one of --sources addresses in 127.0.0.0/8 (IP_BIND_ADDRESS_NO_PORT)
// so N can exceed the ephemeral port range of a single source address.
//
//   bench_hold_conns [--conns N] [--sources N] [--payload BYTES]
// Prints "READY conns=N ..." once every connection is established and has carried its bytes.
#include "bench/loopback.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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
  size_t conns = 65536;
  uint32_t sources = 256;
  uint32_t source_base = 0x7f140000u; // 127.20.0.0
  size_t payload = 8;
};

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--conns N] [--sources N] [--payload BYTES]\n", argv0);
  std::exit(2);
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "bench_hold_conns: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc)
      usage(argv[0]);
    const char* v = argv[++i];
    if (a == "--conns")
      o.conns = static_cast<size_t>(std::atol(v));
    else if (a == "--sources")
      o.sources = static_cast<uint32_t>(std::atol(v));
    else if (a == "--payload")
      o.payload = static_cast<size_t>(std::atol(v));
    else
      usage(argv[0]);
  }
  if (o.conns < 1 || o.conns > 1000000 || o.sources < 1 || o.sources > 65000 || o.payload < 1 ||
      o.payload > 4096)
    usage(argv[0]);
  return o;
}

// The descriptors one process may hold: the soft limit is raised to the hard one (no
// privilege needed for that; raising the hard limit needs CAP_SYS_RESOURCE, which a container
// may not grant). Connections are spread over as many processes as that takes.
size_t fd_budget() {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  getrlimit(RLIMIT_NOFILE, &lim);
  return lim.rlim_cur == RLIM_INFINITY ? size_t{1} << 20 : static_cast<size_t>(lim.rlim_cur);
}

// Blocks until stdin gives a line or end-of-file, or SIGTERM/SIGINT arrives.
void wait_for_release() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  for (;;) {
    pollfd p{STDIN_FILENO, POLLIN, 0};
    int n = poll(&p, 1, 200);
    if (n > 0)
      return; // a line, end-of-file or a hang-up: all mean "close now"
    timespec zero{0, 0};
    if (sigtimedwait(&sigs, nullptr, &zero) > 0)
      return;
  }
}

// One worker process: `count` connections to a listener of its own, clients bound to the
// sources starting at `first_source`. Writes 'R' (or 'E') to ready_fd once established, then
// holds everything until release_fd reaches end-of-file, closes it all and exits.
[[noreturn]] void worker(const options& o, size_t count, uint32_t first_source, int ready_fd,
                         int release_fd) {
  auto fail = [&](const char* what) {
    std::fprintf(stderr, "bench_hold_conns[%d]: %s: %s\n", getpid(), what, std::strerror(errno));
    (void)!write(ready_fd, "E", 1);
    _exit(1);
  };
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0)
    fail("socket");
  sockaddr_in la = v4(k_localhost, 0);
  if (bind(lfd, reinterpret_cast<sockaddr*>(&la), sizeof(la)) != 0)
    fail("bind listener");
  if (listen(lfd, 4096) != 0)
    fail("listen");
  socklen_t len = sizeof(la);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&la), &len);

  std::vector<int> servers;
  servers.reserve(count);
  std::atomic<bool> accept_failed{false};
  std::thread acceptor([&] {
    while (servers.size() < count) {
      int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR)
          continue;
        accept_failed = true;
        return;
      }
      servers.push_back(fd);
    }
  });

  std::vector<int> clients;
  clients.reserve(count);
  std::vector<char> request(o.payload, 'h');
  for (size_t i = 0; i < count; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      fail("socket (client)");
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    uint32_t src_index = (first_source + static_cast<uint32_t>(i)) % o.sources;
    sockaddr_in src = v4(o.source_base + 1 + src_index, 0);
    if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0)
      fail("bind (client)");
    if (connect(fd, reinterpret_cast<sockaddr*>(&la), sizeof(la)) != 0)
      fail("connect");
    if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size()))
      fail("write");
    clients.push_back(fd);
  }
  acceptor.join();
  if (accept_failed)
    fail("accept");
  std::vector<char> buf(o.payload);
  for (int fd : servers) {
    size_t got = 0;
    while (got < o.payload) {
      ssize_t n = read(fd, buf.data() + got, o.payload - got);
      if (n <= 0)
        fail("read (server)");
      got += static_cast<size_t>(n);
    }
  }
  (void)!write(ready_fd, "R", 1);

  char c;
  while (read(release_fd, &c, 1) > 0) {
  }
  for (int fd : clients)
    close(fd);
  for (int fd : servers)
    close(fd);
  close(lfd);
  _exit(0);
}

} // namespace

int main(int argc, char** argv) {
  options o = parse(argc, argv);
  // Signals are taken with sigtimedwait, never by a handler, so the helper always closes.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  size_t budget = fd_budget();
  if (budget < 128) {
    std::fprintf(stderr, "bench_hold_conns: RLIMIT_NOFILE %zu is too small\n", budget);
    return 1;
  }
  size_t per_worker = (budget - 64) / 2; // both ends of each connection, plus a margin
  size_t workers = (o.conns + per_worker - 1) / per_worker;

  auto started = std::chrono::steady_clock::now();
  int ready[2], release[2];
  if (pipe2(ready, O_CLOEXEC) != 0 || pipe2(release, O_CLOEXEC) != 0)
    die("pipe2");
  std::vector<pid_t> pids;
  size_t assigned = 0;
  for (size_t w = 0; w < workers; ++w) {
    size_t count = std::min(per_worker, o.conns - assigned);
    pid_t pid = fork();
    if (pid < 0)
      die("fork");
    if (pid == 0) {
      close(ready[0]);
      close(release[1]);
      worker(o, count, static_cast<uint32_t>(assigned % o.sources), ready[1], release[0]);
    }
    pids.push_back(pid);
    assigned += count;
  }
  close(ready[1]);
  close(release[0]);

  size_t ok = 0, failed = 0;
  char c;
  while (ok + failed < workers && read(ready[0], &c, 1) == 1)
    (c == 'R' ? ok : failed)++;
  if (ok == workers) {
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::printf("READY conns=%zu sockets=%zu processes=%zu sources=%u seconds=%.2f\n", o.conns,
                2 * o.conns, workers, o.sources, took);
    std::fflush(stdout);
    wait_for_release();
  } else {
    std::fprintf(stderr, "bench_hold_conns: %zu of %zu worker processes failed\n", workers - ok,
                 workers);
  }

  started = std::chrono::steady_clock::now();
  close(release[1]); // every worker closes its connections and exits
  int worst = 0;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      worst = 1;
  }
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("CLOSED conns=%zu seconds=%.2f\n", o.conns, took);
  return ok == workers ? worst : 1;
}
