// collector_link against real sockets on loopback; ports come from binding to port 0.
#include <catch2/catch.hpp>

#include "actors/exporter/collector_link.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <functional>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace netlens;
using namespace std::chrono_literals;
using clock_type = collector_link::clock;

namespace {

// Closes the test's own sockets on every path out of a test case.
struct test_fd {
  int fd = -1;
  explicit test_fd(int f = -1) : fd(f) {}
  ~test_fd() {
    if (fd >= 0)
      ::close(fd);
  }
  test_fd(const test_fd&) = delete;
  test_fd& operator=(const test_fd&) = delete;
};

uint32_t get_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// A well-formed IPFIX message of size bytes whose body is a pattern keyed by tag.
ipfix_message make_message(size_t size, uint32_t records, bool templates_only, uint32_t tag) {
  ipfix_message m;
  m.bytes.resize(size);
  m.bytes[0] = 0;
  m.bytes[1] = 10;
  m.bytes[2] = static_cast<uint8_t>(size >> 8);
  m.bytes[3] = static_cast<uint8_t>(size);
  m.bytes[15] = 1; // observation domain 1
  for (size_t i = 16; i < size; ++i)
    m.bytes[i] = static_cast<uint8_t>(tag * 131 + i);
  m.data_records = records;
  m.templates_only = templates_only;
  return m;
}

// The message with its export time checked (the link stamps the time it sends) and zeroed again.
std::vector<uint8_t> unstamped(std::vector<uint8_t> bytes) {
  REQUIRE(bytes.size() >= 16);
  auto now = static_cast<int64_t>(::time(nullptr));
  auto stamped = static_cast<int64_t>(get_u32(bytes.data() + 4));
  CHECK(stamped >= now - 60);
  CHECK(stamped <= now + 1);
  std::fill(bytes.begin() + 4, bytes.begin() + 8, 0);
  return bytes;
}

std::vector<uint8_t> with_sequence(std::vector<uint8_t> bytes, uint32_t seq) {
  bytes[8] = static_cast<uint8_t>(seq >> 24);
  bytes[9] = static_cast<uint8_t>(seq >> 16);
  bytes[10] = static_cast<uint8_t>(seq >> 8);
  bytes[11] = static_cast<uint8_t>(seq);
  return bytes;
}

// A socket bound to an ephemeral loopback port; TCP ones are not listening yet.
int bound_socket(int family, int type, uint16_t& port) {
  int fd = ::socket(family, type | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_storage ss{};
  socklen_t len;
  if (family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(sockaddr_in);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof(sockaddr_in6);
  }
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0);
  port = ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                 : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return fd;
}

collector_link make_link(const std::string& text, collector_transport transport,
                         collector_link_options opts = {}) {
  auto parsed = parse_collector_address(text);
  REQUIRE(std::holds_alternative<collector_address>(parsed));
  return collector_link(std::get<collector_address>(parsed), transport, opts);
}

// Polls the link until pred holds or timeout passes.
bool drive(collector_link& link, const std::function<bool()>& pred,
           std::chrono::milliseconds timeout = 3000ms) {
  auto until = clock_type::now() + timeout;
  while (clock_type::now() < until) {
    link.poll(clock_type::now());
    if (pred())
      return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

std::vector<uint8_t> recv_datagram(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 2000) != 1)
    return {};
  std::vector<uint8_t> buf(70000);
  ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
  buf.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return buf;
}

// A UDP socket bound to 127.0.0.1:port (a collector coming back on the port it had).
int udp_on_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

// A datagram for fd, polling the link meanwhile (its probes go from poll), or {} after 2 s.
std::vector<uint8_t> recv_datagram_while(int fd, collector_link& link) {
  auto until = clock_type::now() + 2000ms;
  while (clock_type::now() < until) {
    link.poll(clock_type::now());
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5) == 1)
      return recv_datagram(fd);
  }
  return {};
}

int accept_within(int listener, int timeout_ms) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1)
    return -1;
  return ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

// Reads from a non-blocking stream until want bytes arrived, polling the link meanwhile so its
// queue keeps flowing.
std::vector<uint8_t> read_stream(int fd, size_t want, collector_link& link,
                                 std::chrono::milliseconds timeout = 5000ms) {
  std::vector<uint8_t> out;
  std::vector<uint8_t> buf(1 << 16);
  auto until = clock_type::now() + timeout;
  while (out.size() < want && clock_type::now() < until) {
    link.poll(clock_type::now());
    ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n > 0) {
      out.insert(out.end(), buf.begin(), buf.begin() + n);
      continue;
    }
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, 2);
  }
  return out;
}

// Splits a stream back into messages by their length fields.
std::vector<std::vector<uint8_t>> split_messages(const std::vector<uint8_t>& stream) {
  std::vector<std::vector<uint8_t>> out;
  size_t at = 0;
  while (at + 16 <= stream.size()) {
    size_t len = (size_t{stream[at + 2]} << 8) | stream[at + 3];
    REQUIRE(stream[at + 1] == 10);
    REQUIRE(len >= 16);
    REQUIRE(at + len <= stream.size());
    out.emplace_back(stream.begin() + at, stream.begin() + at + len);
    at += len;
  }
  CHECK(at == stream.size());
  return out;
}

collector_link_options tcp_options() {
  collector_link_options o;
  o.initial_backoff = 50ms;
  o.max_backoff = 200ms;
  return o;
}

} // namespace

TEST_CASE("make_collector_link takes the configuration's host:port", "[collector_link]") {
  auto bad = make_collector_link("127.0.0.1:0", false);
  REQUIRE(std::holds_alternative<std::string>(bad));
  CHECK_FALSE(std::get<std::string>(bad).empty()); // the config parser's text
  CHECK(std::holds_alternative<std::string>(make_collector_link("127.0.0.1", true)));
  CHECK(std::holds_alternative<std::string>(make_collector_link("::1:4739", true)));

  auto good = make_collector_link("[::1]:4739", true);
  REQUIRE(std::holds_alternative<std::unique_ptr<collector_link>>(good));
  auto& link = *std::get<std::unique_ptr<collector_link>>(good);
  CHECK(link.stats().state == link_state::down); // no I/O before the first poll or send
  CHECK(link.describe().rfind("tcp [::1]:4739 down", 0) == 0);
}

TEST_CASE("udp: datagrams arrive intact with sequence numbers of this session",
          "[collector_link]") {
  for (int family : {AF_INET, AF_INET6}) {
    uint16_t port = 0;
    test_fd rx(bound_socket(family, SOCK_DGRAM, port));
    std::string where = family == AF_INET ? "127.0.0.1:" : "[::1]:";
    auto link = make_link(where + std::to_string(port), collector_transport::udp);
    CHECK(link.stats().state == link_state::down);
    // The first send starts the session when no poll came before it; data before templates is
    // useless to the collector, so it is dropped.
    CHECK(link.needs_templates());
    link.send(make_message(100, 3, false, 99), clock_type::now());
    REQUIRE(link.stats().state == link_state::up);
    CHECK(link.stats().messages_dropped == 1);
    CHECK(link.stats().records_dropped == 3);
    link.poll(clock_type::now());
    CHECK(link.stats().state == link_state::up);

    CHECK(link.needs_templates());
    link.send(make_message(100, 3, false, 99), clock_type::now());
    CHECK(link.stats().messages_dropped == 1 + 1);
    CHECK(link.stats().records_dropped == 3 + 3);

    // A length field that disagrees with the size would be refused too.
    auto bad = make_message(100, 0, true, 98);
    bad.bytes[3] = 99;
    link.send(bad, clock_type::now());
    CHECK(link.stats().messages_dropped == 3);

    auto tmpl = make_message(64, 0, true, 1);
    link.send(tmpl, clock_type::now());
    CHECK_FALSE(link.needs_templates());
    CHECK(unstamped(recv_datagram(rx.fd)) == with_sequence(tmpl.bytes, 0));

    uint32_t seq = 0;
    for (uint32_t i = 0; i < 5; ++i) {
      uint32_t records = i + 2;
      auto m = make_message(200 + i * 10, records, false, 10 + i);
      link.send(m, clock_type::now());
      auto got = unstamped(recv_datagram(rx.fd));
      CHECK(got == with_sequence(m.bytes, seq));
      CHECK(get_u32(got.data() + 8) == seq);
      seq += records;
    }
    auto s = link.stats();
    CHECK(s.messages_sent == 6);
    CHECK(s.records_sent == seq);
    CHECK(s.messages_dropped == 3);
    CHECK(link.describe().find("up, sent 6 messages") != std::string::npos);
  }
}

TEST_CASE("udp: a host name is resolved off the caller's thread", "[collector_link]") {
  uint16_t port = 0;
  test_fd rx(bound_socket(AF_INET, SOCK_DGRAM, port));
  auto link = make_link("localhost:" + std::to_string(port), collector_transport::udp);
  link.poll(clock_type::now());
  CHECK((link.stats().state == link_state::resolving || link.stats().state == link_state::up));
  REQUIRE(drive(link, [&] { return link.stats().state == link_state::up; }));
  // localhost may resolve to ::1 first; only send if it is the IPv4 socket we listen on.
  auto tmpl = make_message(40, 0, true, 2);
  link.send(tmpl, clock_type::now());
  CHECK(link.stats().messages_sent + link.stats().messages_dropped == 1);
}

TEST_CASE("udp: no listener means counted drops and templates again", "[collector_link]") {
  uint16_t port = 0;
  { test_fd probe(bound_socket(AF_INET, SOCK_DGRAM, port)); } // free again, nobody listens
  auto link = make_link("127.0.0.1:" + std::to_string(port), collector_transport::udp);
  link.poll(clock_type::now());
  REQUIRE(link.stats().state == link_state::up);
  link.send(make_message(40, 0, true, 1), clock_type::now());
  // The error comes back on the send after the ICMP; the kernel rate-limits ICMP host-wide
  // (icmp_msgs_per_sec), so other tests on the machine can delay it.
  auto until = clock_type::now() + 3000ms;
  while (link.stats().messages_dropped == 0 && clock_type::now() < until) {
    link.send(make_message(100, 1, false, 2), clock_type::now());
    std::this_thread::sleep_for(5ms);
  }
  auto s = link.stats();
  REQUIRE(s.messages_dropped >= 1);
  CHECK(s.last_error.find("Connection refused") != std::string::npos);
  CHECK(link.needs_templates());
  // Data stays out until templates went again.
  auto dropped = s.messages_dropped;
  link.send(make_message(100, 4, false, 3), clock_type::now());
  CHECK(link.stats().messages_dropped == dropped + 1);
  CHECK(link.stats().state == link_state::up);
}

TEST_CASE("tcp: concatenated messages frame back with their sequence numbers", "[collector_link]") {
  for (int family : {AF_INET, AF_INET6}) {
    uint16_t port = 0;
    test_fd listener(bound_socket(family, SOCK_STREAM, port));
    REQUIRE(::listen(listener.fd, 4) == 0);
    std::string where = family == AF_INET ? "127.0.0.1:" : "[::1]:";
    auto link = make_link(where + std::to_string(port), collector_transport::tcp, tcp_options());
    REQUIRE(drive(link, [&] { return link.stats().state == link_state::up; }));
    test_fd peer(accept_within(listener.fd, 2000));
    REQUIRE(peer.fd >= 0);
    CHECK(link.needs_templates());

    std::vector<ipfix_message> sent;
    sent.push_back(make_message(80, 0, true, 1));
    for (uint32_t i = 0; i < 20; ++i)
      sent.push_back(make_message(100 + i * 37, i % 4, false, 2 + i));
    size_t total = 0;
    for (auto& m : sent) {
      total += m.bytes.size();
      link.send(m, clock_type::now());
    }
    auto got = split_messages(read_stream(peer.fd, total, link));
    REQUIRE(got.size() == sent.size());
    uint32_t seq = 0;
    for (size_t i = 0; i < sent.size(); ++i) {
      CHECK(unstamped(got[i]) == with_sequence(sent[i].bytes, seq));
      seq += sent[i].data_records;
    }
    auto s = link.stats();
    CHECK(s.messages_sent == sent.size());
    CHECK(s.bytes_sent == total);
    CHECK(s.records_sent == seq);
    CHECK(s.queued_bytes == 0);
    CHECK(s.reconnects == 0);
  }
}

TEST_CASE("tcp: collector down at start queues to the bound, then catches up", "[collector_link]") {
  uint16_t port = 0;
  test_fd listener(bound_socket(AF_INET, SOCK_STREAM, port)); // bound, not yet listening
  auto opts = tcp_options();
  opts.queue_bound_bytes = 64 * 1024;
  auto link = make_link("127.0.0.1:" + std::to_string(port), collector_transport::tcp, opts);
  REQUIRE(drive(link, [&] { return link.stats().state == link_state::backoff; }));
  CHECK(link.stats().last_error.find("Connection refused") != std::string::npos);
  CHECK(link.needs_templates());

  std::vector<ipfix_message> sent;
  sent.push_back(make_message(120, 0, true, 1));
  for (uint32_t i = 0; i < 1000; ++i)
    sent.push_back(make_message(1000, 1 + i % 3, false, 2 + i));
  auto start = clock_type::now();
  for (auto& m : sent) {
    link.send(m, clock_type::now());
    link.poll(clock_type::now());
  }
  CHECK(clock_type::now() - start < 200ms);

  auto s = link.stats();
  CHECK(s.state != link_state::up);
  CHECK(s.queued_bytes <= opts.queue_bound_bytes);
  CHECK(s.queued_bytes > opts.queue_bound_bytes - 1000);
  size_t queued = 1 + (s.queued_bytes - 120) / 1000; // the templates and the data that fit
  CHECK(s.messages_dropped == sent.size() - queued);
  uint64_t records_dropped = 0;
  for (size_t i = queued; i < sent.size(); ++i)
    records_dropped += sent[i].data_records;
  CHECK(s.records_dropped == records_dropped);
  CHECK(s.messages_sent == 0);

  // The collector comes up: the link reconnects after its backoff and the queue, which starts
  // with the templates, goes out as the first messages of the session.
  REQUIRE(::listen(listener.fd, 4) == 0);
  REQUIRE(drive(
      link, [&] { return link.stats().state == link_state::up; }, 2000ms));
  CHECK_FALSE(link.needs_templates());
  test_fd peer(accept_within(listener.fd, 2000));
  REQUIRE(peer.fd >= 0);
  auto got = split_messages(read_stream(peer.fd, s.queued_bytes, link));
  REQUIRE(got.size() == queued);
  uint32_t seq = 0;
  for (size_t i = 0; i < queued; ++i) {
    CHECK(unstamped(got[i]) == with_sequence(sent[i].bytes, seq));
    seq += sent[i].data_records;
  }
  CHECK(link.stats().messages_sent == queued);
  CHECK(link.stats().queued_bytes == 0);
  CHECK(link.stats().reconnects == 0); // the first session
}

TEST_CASE("tcp: a collector closing the connection is detected and reconnected",
          "[collector_link]") {
  uint16_t port = 0;
  test_fd listener(bound_socket(AF_INET, SOCK_STREAM, port));
  REQUIRE(::listen(listener.fd, 4) == 0);
  auto link =
      make_link("127.0.0.1:" + std::to_string(port), collector_transport::tcp, tcp_options());
  REQUIRE(drive(link, [&] { return link.stats().state == link_state::up; }));
  uint32_t first_records = 0;
  {
    test_fd peer(accept_within(listener.fd, 2000));
    REQUIRE(peer.fd >= 0);
    auto tmpl = make_message(60, 0, true, 1);
    auto data = make_message(300, 7, false, 2);
    link.send(tmpl, clock_type::now());
    link.send(data, clock_type::now());
    first_records = 7;
    auto got = split_messages(read_stream(peer.fd, 360, link));
    REQUIRE(got.size() == 2);
    CHECK(get_u32(got[1].data() + 8) == 0);
  } // the collector closes its end

  REQUIRE(drive(link, [&] { return link.stats().state != link_state::up; }));
  CHECK(link.stats().last_error == "collector closed the connection");
  CHECK(link.needs_templates());
  REQUIRE(drive(link, [&] { return link.stats().state == link_state::up; }));
  CHECK(link.stats().reconnects == 1);
  CHECK(link.needs_templates());

  test_fd peer(accept_within(listener.fd, 2000));
  REQUIRE(peer.fd >= 0);
  auto tmpl = make_message(60, 0, true, 3);
  auto d1 = make_message(200, 5, false, 4);
  auto d2 = make_message(210, 2, false, 5);
  link.send(tmpl, clock_type::now());
  link.send(d1, clock_type::now());
  link.send(d2, clock_type::now());
  auto got = split_messages(read_stream(peer.fd, 470, link));
  REQUIRE(got.size() == 3);
  CHECK(unstamped(got[0]) == with_sequence(tmpl.bytes, 0));
  CHECK(unstamped(got[1]) == with_sequence(d1.bytes, 0)); // a new session counts from 0
  CHECK(unstamped(got[2]) == with_sequence(d2.bytes, 5));
  CHECK(link.stats().records_sent == first_records + 7);
}

TEST_CASE("tcp: partial writes resume in order when the collector is slow", "[collector_link]") {
  uint16_t port = 0;
  test_fd listener(bound_socket(AF_INET, SOCK_STREAM, port));
  int small = 64 * 1024; // a fixed receive buffer, so the kernel cannot take all 8 MB
  REQUIRE(::setsockopt(listener.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
  REQUIRE(::listen(listener.fd, 4) == 0);
  auto opts = tcp_options();
  opts.queue_bound_bytes = 16 << 20;
  auto link = make_link("127.0.0.1:" + std::to_string(port), collector_transport::tcp, opts);
  REQUIRE(drive(link, [&] { return link.stats().state == link_state::up; }));
  test_fd peer(accept_within(listener.fd, 2000));
  REQUIRE(peer.fd >= 0);

  std::vector<uint8_t> expected;
  std::vector<size_t> starts;
  uint32_t seq = 0;
  clock_type::duration in_link{};
  for (uint32_t i = 0; i < 141; ++i) {
    auto m = i == 0 ? make_message(100, 0, true, 0) : make_message(60000 - i, 3, false, i);
    auto stamped = with_sequence(m.bytes, seq);
    starts.push_back(expected.size());
    expected.insert(expected.end(), stamped.begin(), stamped.end());
    seq += m.data_records;
    auto start = clock_type::now();
    link.send(std::move(m), clock_type::now());
    link.poll(clock_type::now());
    in_link += clock_type::now() - start;
  }
  CHECK(in_link < 1000ms); // a full socket buffer never makes the link wait
  REQUIRE(expected.size() > 8000000);
  CHECK(link.stats().queued_bytes > 0); // the kernel's buffers are full
  CHECK(link.stats().messages_dropped == 0);

  auto got = read_stream(peer.fd, expected.size(), link, 20000ms);
  REQUIRE(got.size() == expected.size());
  for (size_t at : starts) { // export times are the link's; everything else byte for byte
    auto header = unstamped(std::vector<uint8_t>(got.begin() + at, got.begin() + at + 16));
    std::copy(header.begin(), header.end(), got.begin() + at);
  }
  CHECK(std::memcmp(got.data(), expected.data(), got.size()) == 0);
  CHECK(link.stats().queued_bytes == 0);
  CHECK(link.stats().bytes_sent == expected.size());
}

TEST_CASE("tcp: close flushes within its deadline and drops the rest", "[collector_link]") {
  uint16_t port = 0;
  test_fd listener(bound_socket(AF_INET, SOCK_STREAM, port));
  int small = 64 * 1024;
  REQUIRE(::setsockopt(listener.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
  REQUIRE(::listen(listener.fd, 4) == 0);
  auto opts = tcp_options();
  opts.queue_bound_bytes = 16 << 20;
  auto link = make_link("127.0.0.1:" + std::to_string(port), collector_transport::tcp, opts);
  REQUIRE(drive(link, [&] { return link.stats().state == link_state::up; }));
  test_fd peer(accept_within(listener.fd, 2000));
  REQUIRE(peer.fd >= 0);
  link.send(make_message(100, 0, true, 0), clock_type::now());
  for (uint32_t i = 1; i <= 140; ++i)
    link.send(make_message(60000, 1, false, i), clock_type::now());
  REQUIRE(link.stats().queued_bytes > 0);

  auto start = clock_type::now();
  link.close(clock_type::now() + 50ms);
  auto took = clock_type::now() - start;
  CHECK(took >= 45ms);
  CHECK(took < 500ms);
  auto s = link.stats();
  CHECK(s.state == link_state::down);
  CHECK(s.queued_bytes == 0);
  CHECK(s.messages_dropped > 0);
  CHECK(s.messages_sent + s.messages_dropped == 141);
  link.send(make_message(100, 0, true, 0), clock_type::now());
  CHECK(link.stats().messages_dropped == s.messages_dropped + 1);
  link.poll(clock_type::now());
  CHECK(link.stats().state == link_state::down);
}

TEST_CASE("udp paced: a burst leaves spread over the window, in order, none lost",
          "[collector_link]") {
  uint16_t port = 0;
  test_fd rx(bound_socket(AF_INET, SOCK_DGRAM, port));
  // Room for the whole burst: each 200-byte datagram takes ~1 KiB of receive buffer, so the
  // default (~208 KiB) holds about 200 of the 401, and a reader slowed down (a sanitizer build,
  // a busy machine) lost the rest. The reader's pace is not what this test measures.
  int rcvbuf = 4 << 20;
  if (setsockopt(rx.fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
    setsockopt(rx.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  collector_link_options opts;
  opts.pace_window = 200ms;
  opts.queue_bound_bytes = 1 << 20;
  auto link = make_link("127.0.0.1:" + std::to_string(port), collector_transport::udp, opts);
  link.poll(clock_type::now());
  REQUIRE(link.stats().state == link_state::up);
  // The collector reads as datagrams come, as a real one does.
  constexpr uint32_t k_burst = 400;
  std::vector<std::vector<uint8_t>> received;
  std::thread reader([&] {
    for (uint32_t i = 0; i < k_burst + 1; ++i) {
      auto d = recv_datagram(rx.fd);
      if (d.empty())
        return;
      received.push_back(std::move(d));
    }
  });
  CHECK(link.needs_templates()); // a paced link has no templates of its own yet
  auto start = clock_type::now();
  link.send(make_message(64, 0, true, 1), start);
  CHECK_FALSE(link.needs_templates());
  for (uint32_t i = 0; i < k_burst; ++i)
    link.send(make_message(200, 2, false, 100 + i), start);
  CHECK(link.backlog());
  CHECK(link.stats().messages_sent == 0); // queued, not sent in the caller's burst
  // Polled every 5 ms as the exporter does while a backlog waits: halfway through the window,
  // about half has gone, the pace, not one burst.
  while (clock_type::now() - start < 100ms) {
    std::this_thread::sleep_for(5ms);
    link.poll(clock_type::now());
  }
  auto half = link.stats().messages_sent;
  CHECK(half >= 100);
  CHECK(half <= 350);
  auto until = clock_type::now() + 2000ms;
  while (link.backlog() && clock_type::now() < until) {
    std::this_thread::sleep_for(5ms);
    link.poll(clock_type::now());
  }
  REQUIRE_FALSE(link.backlog());
  // A lone burst leaves at a quarter above its size over the window: over 0.8 x 200 ms.
  CHECK(clock_type::now() - start >= 120ms);
  reader.join();
  // Everything arrived, in order, with the sequence of the session.
  REQUIRE(received.size() == k_burst + 1);
  CHECK(received[0].size() == 64);
  uint32_t seq = 0;
  for (uint32_t i = 0; i < k_burst; ++i) {
    auto& got = received[i + 1];
    REQUIRE(got.size() == 200);
    CHECK(unstamped(got) == with_sequence(make_message(200, 2, false, 100 + i).bytes, seq));
    seq += 2;
  }
  CHECK(link.stats().records_sent == 2 * k_burst);
  CHECK(link.stats().messages_dropped == 0);
}

TEST_CASE("udp paced: after a refusal the link sends its templates again before data",
          "[collector_link]") {
  uint16_t port = 0;
  { test_fd probe(bound_socket(AF_INET, SOCK_DGRAM, port)); } // nobody listens yet
  collector_link_options opts;
  opts.pace_window = 10ms;
  auto link = make_link("127.0.0.1:" + std::to_string(port), collector_transport::udp, opts);
  link.poll(clock_type::now());
  REQUIRE(link.stats().state == link_state::up);
  auto tmpl = make_message(64, 0, true, 1);
  link.send(tmpl, clock_type::now());
  // The collector is away: data is refused until the ICMP shows, then dropped and counted.
  auto until = clock_type::now() + 3000ms;
  uint32_t tag = 200;
  while (link.stats().last_error.empty() && clock_type::now() < until) {
    link.send(make_message(300, 1, false, tag++), clock_type::now());
    drive(
        link, [&] { return !link.backlog(); }, 100ms);
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(link.stats().last_error.find("Connection refused") != std::string::npos);
  CHECK(link.stats().messages_dropped >= 1);
  // The collector comes back on the same port, knowing no templates.
  test_fd rx(udp_on_loopback(port));
  std::this_thread::sleep_for(150ms); // past the link's template retry interval
  auto data = make_message(300, 5, false, 999);
  link.send(data, clock_type::now());
  REQUIRE(drive(
      link, [&] { return !link.backlog(); }, 1000ms));
  // Without the caller's help: the templates first, then the data.
  auto first = recv_datagram(rx.fd);
  REQUIRE(first.size() == 64);
  CHECK(std::equal(first.begin() + 16, first.end(), tmpl.bytes.begin() + 16));
  auto second = recv_datagram(rx.fd);
  REQUIRE(second.size() == 300);
  CHECK(std::equal(second.begin() + 16, second.end(), data.bytes.begin() + 16));
}

TEST_CASE("udp paced: while the collector refuses, data is dropped as it comes, not held",
          "[collector_link]") {
  uint16_t port = 0;
  { test_fd probe(bound_socket(AF_INET, SOCK_DGRAM, port)); } // nobody listens yet
  collector_link_options opts;
  opts.pace_window = 800ms;
  opts.queue_bound_bytes = 8 << 20;
  auto link = make_link("127.0.0.1:" + std::to_string(port), collector_transport::udp, opts);
  link.poll(clock_type::now());
  REQUIRE(link.stats().state == link_state::up);
  auto tmpl = make_message(64, 0, true, 1);
  link.send(tmpl, clock_type::now());
  REQUIRE(drive(
      link, [&] { return !link.backlog(); }, 1000ms));
  // The templates' refusal comes back (loopback answers at once) and is taken at the next poll.
  REQUIRE(drive(
      link, [&] { return !link.stats().last_error.empty(); }, 1000ms));
  REQUIRE(link.stats().last_error.find("Connection refused") != std::string::npos);
  // A second of a busy host's export: none of it waits in memory for a pace that would only
  // drop it later.
  auto before = link.stats();
  for (uint32_t i = 0; i < 1000; ++i)
    link.send(make_message(1000, 10, false, 500 + i), clock_type::now());
  CHECK(link.stats().queued_bytes == 0);
  CHECK_FALSE(link.backlog());
  CHECK(link.stats().messages_dropped - before.messages_dropped == 1000);
  CHECK(link.stats().records_dropped - before.records_dropped == 10000);
  // Meanwhile the templates alone probe the collector, at most every 100 ms.
  auto start = clock_type::now();
  auto sent_before = link.stats().messages_sent;
  while (clock_type::now() - start < 350ms) {
    link.poll(clock_type::now());
    std::this_thread::sleep_for(5ms);
  }
  auto probes = link.stats().messages_sent - sent_before;
  CHECK(probes >= 1);
  CHECK(probes <= 4);
  // The collector comes back on the same port: the next probe goes unrefused, data flows,
  // templates first.
  test_fd rx(udp_on_loopback(port));
  auto first = recv_datagram_while(rx.fd, link); // the probe
  REQUIRE(first.size() == 64);
  CHECK(std::equal(first.begin() + 16, first.end(), tmpl.bytes.begin() + 16));
  link.poll(clock_type::now()); // nothing refused it
  auto data = make_message(300, 5, false, 999);
  auto dropped = link.stats().messages_dropped;
  link.send(data, clock_type::now());
  CHECK(link.stats().messages_dropped == dropped);
  REQUIRE(drive(
      link, [&] { return !link.backlog(); }, 1000ms));
  auto second = recv_datagram(rx.fd);
  REQUIRE(second.size() == 300);
  CHECK(std::equal(second.begin() + 16, second.end(), data.bytes.begin() + 16));
}

TEST_CASE("udp paced: a steady stream leaves at its own rate, not a window behind",
          "[collector_link]") {
  uint16_t port = 0;
  test_fd rx(bound_socket(AF_INET, SOCK_DGRAM, port)); // never read: the kernel drops quietly
  collector_link_options opts;
  opts.pace_window = 800ms;
  opts.queue_bound_bytes = 64 << 20;
  auto link = make_link("127.0.0.1:" + std::to_string(port), collector_transport::udp, opts);
  link.poll(clock_type::now());
  REQUIRE(link.stats().state == link_state::up);
  link.send(make_message(64, 0, true, 1), clock_type::now());
  // A busy host: a flush of 100 messages every 50 ms (2,000 a second) for 3 s, the link
  // polled every 5 ms. Paced by backlog / window alone, the backlog would settle at the
  // window's worth, 1,600 messages; following the rate it stays within about one flush.
  constexpr size_t k_size = 200;
  std::vector<size_t> before_flush;
  auto next_flush = clock_type::now();
  for (int flush = 0; flush < 60; ++flush) {
    while (clock_type::now() < next_flush) {
      link.poll(clock_type::now());
      std::this_thread::sleep_for(5ms);
    }
    before_flush.push_back(link.stats().queued_bytes / k_size);
    for (uint32_t i = 0; i < 100; ++i)
      link.send(make_message(k_size, 1, false, 1000 + i), clock_type::now());
    next_flush += 50ms;
  }
  std::vector<size_t> last(before_flush.end() - 20, before_flush.end());
  std::sort(last.begin(), last.end());
  CAPTURE(before_flush);
  CHECK(last[10] <= 300); // the median backlog a flush finds, over the last second
  CHECK(link.stats().messages_dropped == 0);
}
