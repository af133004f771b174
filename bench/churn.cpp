// Loopback connection churn at the fastest rate the machine makes, to measure what tracing
// every connection costs the applications being traced.
//
// TCP (default): one epoll server thread accepts; client threads loop
//   socket -> bind(127.x.y.z, port 0) -> connect(127.0.0.1:P) -> write -> read reply -> close
// for the duration and the program prints connections per second. Closes are ordinary closes
// (no SO_LINGER {1,0} reset): the client closes first, the server closes on end-of-file, so
// the kernel walks the whole state machine and the client socket ends in TIME_WAIT.
//
// TIME_WAIT and ephemeral ports: every client binds to one of --sources source addresses in
// 127.0.0.0/8 with IP_BIND_ADDRESS_NO_PORT, so the port is picked at connect() time per
// (source, destination) pair and each source address has the whole ephemeral range to itself.
// With 1024 sources and 60 s of TIME_WAIT that is room for ~480,000 connections/s; no sysctl
// is changed.
//
// UDP (--udp): one server thread echoes datagrams; client threads loop
//   socket -> connect -> (send, recv) x --datagrams -> close
// (--sendto: no connect, (sendto, recvfrom) x --datagrams: every datagram names its peer)
// which exercises the send/recv programs and the UDP release program.
//
//   bench_churn [--duration S] [--clients N] [--servers N] [--payload BYTES] [--sources N]
//               [--udp] [--datagrams N] [--rate PER_S]
// --rate: at most this many connections (UDP sockets) a second over all client threads, each
// thread starting its rounds on a schedule; 0 (the default) goes as fast as the threads do.
// The last line is machine-readable: "RESULT mode=tcp conns=... seconds=... conns_per_s=..."
#include "bench/loopback.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
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
  double duration_s = 10;
  int clients = 3;
  int servers = 1;
  size_t payload = 64;
  uint32_t sources = 1024;
  uint32_t source_base = 0x7f0a0000u; // 127.10.0.0; sources are base+1 .. base+sources
  bool udp = false;
  bool sendto = false; // UDP clients do not connect: sendto/recvfrom, as the server does
  int datagrams = 8;
  double rate = 0; // connections a second over all clients; 0: as fast as they go
};

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--duration S] [--clients N] [--servers N] [--payload BYTES]\n"
               "          [--sources N] [--udp [--sendto]] [--datagrams N] [--rate PER_S]\n",
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
    else if (a == "--clients")
      o.clients = std::atoi(value());
    else if (a == "--servers")
      o.servers = std::atoi(value());
    else if (a == "--payload")
      o.payload = static_cast<size_t>(std::atol(value()));
    else if (a == "--sources")
      o.sources = static_cast<uint32_t>(std::atol(value()));
    else if (a == "--udp")
      o.udp = true;
    else if (a == "--sendto")
      o.sendto = true;
    else if (a == "--datagrams")
      o.datagrams = std::atoi(value());
    else if (a == "--rate")
      o.rate = std::atof(value());
    else
      usage(argv[0]);
  }
  if (o.duration_s <= 0 || o.clients < 1 || o.servers < 1 || o.payload < 1 || o.payload > 65536 ||
      o.sources < 1 || o.sources > 65000 || o.datagrams < 1 || o.rate < 0)
    usage(argv[0]);
  return o;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "bench_churn: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

// Clients stop first; servers keep serving until every client has finished its last round.
std::atomic<bool> g_stop_clients{false};
std::atomic<bool> g_stop_servers{false};

// One counter per thread, each on its own cache line.
struct alignas(64) thread_count {
  uint64_t done = 0;
  uint64_t errors = 0;
};

// --rate: one thread's schedule. Each round starts at its slot; a thread that fell behind
// catches up by at most 50 ms of rounds, never with a burst of everything it missed.
class round_pacer {
public:
  explicit round_pacer(const options& o)
      : period_(o.rate > 0 ? std::chrono::duration<double>(o.clients / o.rate)
                           : std::chrono::duration<double>(0)),
        next_(std::chrono::steady_clock::now()) {}

  void wait() {
    if (period_.count() == 0)
      return;
    auto now = std::chrono::steady_clock::now();
    auto floor = now - std::chrono::milliseconds(50);
    if (next_ < floor)
      next_ = floor;
    if (next_ > now)
      std::this_thread::sleep_until(next_);
    next_ += std::chrono::duration_cast<std::chrono::steady_clock::duration>(period_);
  }

private:
  std::chrono::duration<double> period_;
  std::chrono::steady_clock::time_point next_;
};

// ---- TCP -------------------------------------------------------------------------------

int tcp_listener(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  sockaddr_in a = v4(k_localhost, port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
    die("bind listener");
  if (listen(fd, 4096) != 0)
    die("listen");
  return fd;
}

uint16_t bound_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    die("getsockname");
  return ntohs(a.sin_port);
}

// Per accepted connection: how much of the request arrived; the reply goes out once it all did.
struct server_conn {
  size_t got = 0;
  bool replied = false;
};

void tcp_server(int listen_fd, size_t payload, thread_count* count) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0)
    die("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev) != 0)
    die("epoll_ctl listener");
  std::vector<server_conn> conns(1024);
  std::vector<char> buf(payload + 1);
  std::vector<char> reply(payload, 'r');
  epoll_event events[256];

  // Reads what is there; replies once the whole request is in; closes at end-of-file.
  // Returns false when the fd was closed.
  auto serve = [&](int fd) {
    server_conn& sc = conns[static_cast<size_t>(fd)];
    for (;;) {
      ssize_t n = read(fd, buf.data(), buf.size());
      if (n > 0) {
        sc.got += static_cast<size_t>(n);
        if (!sc.replied && sc.got >= payload) {
          if (write(fd, reply.data(), reply.size()) != static_cast<ssize_t>(reply.size()))
            ++count->errors;
          sc.replied = true;
        }
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return true;
      if (n < 0)
        ++count->errors;
      else
        ++count->done;
      close(fd); // also leaves the epoll set
      return false;
    }
  };

  while (!g_stop_servers.load(std::memory_order_relaxed)) {
    int n = epoll_wait(ep, events, 256, 100);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd != listen_fd) {
        serve(fd);
        continue;
      }
      for (;;) {
        int c = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
          if (errno != EAGAIN && errno != EINTR)
            ++count->errors;
          break;
        }
        if (static_cast<size_t>(c) >= conns.size())
          conns.resize(static_cast<size_t>(c) * 2);
        conns[static_cast<size_t>(c)] = server_conn{};
        // The request usually is there already; only wait for what is not.
        if (!serve(c))
          continue;
        epoll_event cev{};
        cev.events = EPOLLIN | EPOLLRDHUP;
        cev.data.fd = c;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) != 0) {
          ++count->errors;
          close(c);
        }
      }
    }
  }
  close(ep);
}

void tcp_client(const options& o, int index, uint16_t port, thread_count* count) {
  std::vector<char> request(o.payload, 'q');
  std::vector<char> buf(o.payload);
  sockaddr_in dst = v4(k_localhost, port);
  // Each client thread walks its own slice of the source addresses, round robin.
  uint32_t per_thread = std::max<uint32_t>(1, o.sources / static_cast<uint32_t>(o.clients));
  uint32_t first = static_cast<uint32_t>(index) * per_thread;
  uint32_t k = 0;
  round_pacer pacer(o);
  while (!g_stop_clients.load(std::memory_order_relaxed)) {
    pacer.wait();
    uint32_t src_index = (first + k++ % per_thread) % o.sources;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      ++count->errors;
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in src = v4(o.source_base + 1 + src_index, 0);
    bool ok = bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) == 0 &&
              connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) == 0 &&
              write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size());
    size_t got = 0;
    while (ok && got < o.payload) {
      ssize_t n = read(fd, buf.data() + got, o.payload - got);
      if (n <= 0)
        ok = false;
      else
        got += static_cast<size_t>(n);
    }
    close(fd);
    if (ok)
      ++count->done;
    else
      ++count->errors;
  }
}

// ---- UDP -------------------------------------------------------------------------------

void udp_server(int fd, thread_count* count) {
  std::vector<char> buf(65536);
  while (!g_stop_servers.load(std::memory_order_relaxed)) {
    sockaddr_in from{};
    socklen_t len = sizeof(from);
    ssize_t n = recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 0)
      continue; // timeout (SO_RCVTIMEO) lets it look at g_stop_servers
    if (sendto(fd, buf.data(), static_cast<size_t>(n), 0, reinterpret_cast<sockaddr*>(&from),
               len) == n)
      ++count->done;
    else
      ++count->errors;
  }
}

void udp_client(const options& o, int index, uint16_t port, thread_count* count) {
  std::vector<char> request(o.payload, 'q');
  std::vector<char> buf(o.payload + 1);
  sockaddr_in dst = v4(k_localhost, port);
  timeval timeout{0, 200 * 1000}; // a datagram lost on loopback must not stall the thread
  uint32_t k = 0;
  round_pacer pacer(o);
  while (!g_stop_clients.load(std::memory_order_relaxed)) {
    pacer.wait();
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      ++count->errors;
      continue;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    sockaddr_in src = v4(o.source_base + 1 + (static_cast<uint32_t>(index) + k++) % o.sources, 0);
    bool ok = bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) == 0 &&
              (o.sendto || connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) == 0);
    for (int d = 0; ok && d < o.datagrams; ++d) {
      if (o.sendto) {
        sockaddr_in from{};
        socklen_t len = sizeof(from);
        ok =
            ::sendto(fd, request.data(), request.size(), 0, reinterpret_cast<const sockaddr*>(&dst),
                     sizeof(dst)) == static_cast<ssize_t>(request.size()) &&
            recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len) ==
                static_cast<ssize_t>(request.size());
      } else {
        ok = send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size()) &&
             recv(fd, buf.data(), buf.size(), 0) == static_cast<ssize_t>(request.size());
      }
    }
    close(fd);
    if (ok)
      ++count->done;
    else
      ++count->errors;
  }
}

} // namespace

int main(int argc, char** argv) {
  options o = parse(argc, argv);
  std::vector<thread_count> server_counts(static_cast<size_t>(o.servers));
  std::vector<thread_count> client_counts(static_cast<size_t>(o.clients));
  std::vector<std::thread> threads;
  std::vector<int> server_fds;
  uint16_t port = 0;

  if (o.udp) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      die("socket");
    sockaddr_in a = v4(k_localhost, 0);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
      die("bind udp server");
    timeval tick{0, 100 * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof(tick));
    port = bound_port(fd);
    server_fds.push_back(fd);
    o.servers = 1;
    threads.emplace_back(udp_server, fd, &server_counts[0]);
  } else {
    // --servers > 1: one SO_REUSEPORT listener per server thread, all on the same port.
    for (int s = 0; s < o.servers; ++s) {
      int fd = tcp_listener(port);
      port = bound_port(fd);
      server_fds.push_back(fd);
      threads.emplace_back(tcp_server, fd, o.payload, &server_counts[static_cast<size_t>(s)]);
    }
  }

  auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < o.clients; ++c)
    clients.emplace_back(o.udp ? udp_client : tcp_client, std::cref(o), c, port,
                         &client_counts[static_cast<size_t>(c)]);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.duration_s));
  g_stop_clients = true;
  for (auto& t : clients)
    t.join();
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  g_stop_servers = true;
  for (auto& t : threads)
    t.join();
  for (int fd : server_fds)
    close(fd);

  uint64_t done = 0, errors = 0, served = 0, server_errors = 0;
  for (const auto& c : client_counts) {
    done += c.done;
    errors += c.errors;
  }
  for (const auto& c : server_counts) {
    served += c.done;
    server_errors += c.errors;
  }
  const char* unit = o.udp ? "udp sockets" : "connections";
  std::printf("%s: %llu in %.2f s = %.0f/s (%d client threads, %d server threads, payload %zu B,"
              " %u source addresses)\n",
              unit, static_cast<unsigned long long>(done), seconds, done / seconds, o.clients,
              o.servers, o.payload, o.sources);
  if (o.udp)
    std::printf("datagrams echoed: %llu = %.0f/s\n", static_cast<unsigned long long>(served),
                served / seconds);
  std::printf("errors: client %llu, server %llu\n", static_cast<unsigned long long>(errors),
              static_cast<unsigned long long>(server_errors));
  std::printf("RESULT mode=%s conns=%llu seconds=%.3f conns_per_s=%.0f errors=%llu\n",
              o.udp ? "udp" : "tcp", static_cast<unsigned long long>(done), seconds, done / seconds,
              static_cast<unsigned long long>(errors + server_errors));
  return 0;
}
