// Conntrack event ingest: netlens's netlink consumer, feeding a conntrack_cache on its own
// thread, side by side with `conntrack -E` (conntrack-tools) on the same flood of events.
//
// In a network namespace of its own (nlbench-ct-<pid>, removed on every exit) a generator
// thread inserts NAT'd UDP conntrack entries through ctnetlink, many per netlink message
// batch, and deletes them again once `--live` are alive: every entry is one NEW and one
// DESTROY event, at a paced `--rate` (events/s; 0 = as fast as it can). Both consumers see
// every event the kernel sends; what each received is compared with what the generator made.
//
//   sudo build/bench/bench_conntrack_ingest --duration 10 --rate 120000
//   sudo build/bench/bench_conntrack_ingest --rate 0 --no-conntrack-e   # netlens alone, flat out
//
// The last lines are machine-readable: "RESULT|conntrack_ingest|metric|value|unit|target|verdict".
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <linux/netlink.h>
#include <pthread.h>
#include <sched.h>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <libnetfilter_conntrack/libnetfilter_conntrack.h>

#include "actors/conntrack/conntrack_cache.hpp"
#include "actors/conntrack/conntrack_consumer.hpp"
#include "tests/support/orphan_netns.hpp"

using namespace netlens;
using clk = std::chrono::steady_clock;

namespace {

std::atomic<bool> g_interrupted{false};

struct options {
  double duration_s = 10;
  uint64_t rate = 120'000; // events/s offered (NEW + DESTROY); 0: as fast as possible
  unsigned batch = 64;     // entries per netlink message batch
  unsigned live = 8192;    // entries alive before the oldest are deleted
  uint32_t rcvbuf = 8u << 20;
  int consumer_cpu = -1; // default: the last CPU
  int generator_cpu = 0;
  int conntrack_e_cpu = -1; // -1: not pinned
  bool conntrack_e = true;
};

// Thrown, not exit(): the namespace's destructor must run on the way out.
[[noreturn]] void die(const std::string& why) {
  throw std::runtime_error(why);
}

options parse(int argc, char** argv) {
  options o;
  o.consumer_cpu = static_cast<int>(std::thread::hardware_concurrency()) - 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc)
        die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--duration")
      o.duration_s = std::stod(next());
    else if (a == "--rate")
      o.rate = std::stoull(next());
    else if (a == "--batch")
      o.batch = static_cast<unsigned>(std::stoul(next()));
    else if (a == "--live")
      o.live = static_cast<unsigned>(std::stoul(next()));
    else if (a == "--rcvbuf")
      o.rcvbuf = static_cast<uint32_t>(std::stoul(next()));
    else if (a == "--consumer-cpu")
      o.consumer_cpu = std::stoi(next());
    else if (a == "--generator-cpu")
      o.generator_cpu = std::stoi(next());
    else if (a == "--conntrack-e-cpu")
      o.conntrack_e_cpu = std::stoi(next());
    else if (a == "--no-conntrack-e")
      o.conntrack_e = false;
    else
      die("unknown argument " + a +
          " (--duration S --rate EV/S --batch N --live N --rcvbuf B --consumer-cpu N "
          "--generator-cpu N --conntrack-e-cpu N --no-conntrack-e)");
  }
  if (o.batch == 0 || o.live < o.batch)
    die("--batch must be > 0 and --live >= --batch");
  return o;
}

int sh(const std::string& cmd) {
  return std::system(cmd.c_str());
}

void pin(pid_t tid, int cpu) {
  if (cpu < 0)
    return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(tid, sizeof set, &set) != 0)
    std::fprintf(stderr, "warning: pinning %d to CPU %d: %s\n", tid, cpu, std::strerror(errno));
}

// The namespace of this run; a run killed before its destructor leaves it, the next removes it.
struct bench_netns {
  std::string name = "nlbench-ct-" + std::to_string(getpid());
  int fd = -1;
  uint32_t inode = 0;
  bench_netns() {
    remove_orphans();
    if (sh("ip netns add " + name) != 0)
      die("ip netns add failed");
    sh("ip -n " + name + " link set lo up");
    fd = open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || fstat(fd, &st) != 0) {
      sh("ip netns del " + name);
      die("opening the namespace failed");
    }
    inode = static_cast<uint32_t>(st.st_ino);
  }
  ~bench_netns() {
    close(fd);
    sh("ip netns del " + name + " 2>/dev/null");
  }
  static void remove_orphans() { netlens::testing::remove_orphan_netns("nlbench-ct-"); }
};

// --- the generator: ctnetlink NEW and DELETE requests built by hand, many per sendmsg ---

class message_writer {
public:
  void begin(uint16_t type, uint16_t flags, uint32_t seq) {
    start_ = buf_.size();
    nlmsghdr h{};
    h.nlmsg_type = static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | type);
    h.nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
    h.nlmsg_seq = seq;
    append(&h, sizeof h);
    nfgenmsg g{};
    g.nfgen_family = AF_INET;
    g.version = NFNETLINK_V0;
    append(&g, sizeof g);
    pad();
  }
  void end() { set_len(start_, buf_.size() - start_); }
  size_t nest(uint16_t type) {
    size_t at = buf_.size();
    nlattr a{};
    a.nla_type = static_cast<uint16_t>(type | NLA_F_NESTED);
    append(&a, sizeof a);
    return at;
  }
  void close_nest(size_t at) {
    uint16_t len = static_cast<uint16_t>(buf_.size() - at);
    std::memcpy(buf_.data() + at, &len, sizeof len);
  }
  template <typename T> void put(uint16_t type, T value) {
    nlattr a{};
    a.nla_type = type;
    a.nla_len = static_cast<uint16_t>(NLA_HDRLEN + sizeof value);
    append(&a, sizeof a);
    append(&value, sizeof value);
    pad();
  }
  void tuple(uint16_t which, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport) {
    size_t t = nest(which);
    size_t ip = nest(CTA_TUPLE_IP);
    put(CTA_IP_V4_SRC, src);
    put(CTA_IP_V4_DST, dst);
    close_nest(ip);
    size_t proto = nest(CTA_TUPLE_PROTO);
    put(CTA_PROTO_NUM, uint8_t{IPPROTO_UDP});
    put(CTA_PROTO_SRC_PORT, htons(sport));
    put(CTA_PROTO_DST_PORT, htons(dport));
    close_nest(proto);
    close_nest(t);
  }
  void clear() { buf_.clear(); }
  const std::vector<uint8_t>& bytes() const { return buf_; }

private:
  void append(const void* p, size_t n) {
    auto* b = static_cast<const uint8_t*>(p);
    buf_.insert(buf_.end(), b, b + n);
  }
  void pad() { buf_.resize(NLA_ALIGN(buf_.size()), 0); }
  void set_len(size_t at, size_t len) {
    uint32_t l = static_cast<uint32_t>(len);
    std::memcpy(buf_.data() + at, &l, sizeof l);
  }
  std::vector<uint8_t> buf_;
  size_t start_ = 0;
};

// Entry id -> a unique UDP flow 10.x.y.z:sport -> 10.99.0.1:53, DNAT'd to 192.168.0.1:5353.
constexpr uint32_t k_ports = 50000;
uint32_t client_addr(uint64_t id) {
  return htonl(0x0a000000u | static_cast<uint32_t>(id / k_ports));
}
uint16_t client_port(uint64_t id) {
  return static_cast<uint16_t>(1024 + id % k_ports);
}
const uint32_t k_service = htonl(0x0a630001u); // 10.99.0.1
const uint32_t k_backend = htonl(0xc0a80001u); // 192.168.0.1

struct generator_result {
  uint64_t inserted = 0, deleted = 0, insert_errors = 0, delete_errors = 0, other_errors = 0;
  int first_error = 0;
  clk::time_point start, end;
  uint64_t expected_events() const { return inserted - insert_errors + deleted - delete_errors; }
};

generator_result generate(const options& o, int ns_fd) {
  generator_result r;
  if (setns(ns_fd, CLONE_NEWNET) != 0)
    die(std::string("generator setns: ") + std::strerror(errno));
  pin(0, o.generator_cpu);
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (s < 0)
    die(std::string("generator socket: ") + std::strerror(errno));
  int big = 64 << 20;
  setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
  sockaddr_nl self{};
  self.nl_family = AF_NETLINK;
  bind(s, reinterpret_cast<sockaddr*>(&self), sizeof self);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;

  std::vector<uint8_t> reply(1 << 16);
  // Requests go without NLM_F_ACK: the kernel answers only the ones that failed.
  auto drain_errors = [&] {
    for (;;) {
      ssize_t n = recv(s, reply.data(), reply.size(), MSG_DONTWAIT);
      if (n <= 0)
        return;
      for (size_t off = 0; off + sizeof(nlmsghdr) <= static_cast<size_t>(n);) {
        nlmsghdr h;
        std::memcpy(&h, reply.data() + off, sizeof h);
        if (h.nlmsg_len < sizeof h)
          break;
        if (h.nlmsg_type == NLMSG_ERROR && h.nlmsg_len >= NLMSG_HDRLEN + sizeof(nlmsgerr)) {
          nlmsgerr e;
          std::memcpy(&e, reply.data() + off + NLMSG_HDRLEN, sizeof e);
          if (e.error != 0) {
            if (!r.first_error)
              r.first_error = e.error;
            if ((e.msg.nlmsg_type & 0xff) == IPCTNL_MSG_CT_NEW)
              ++r.insert_errors;
            else if ((e.msg.nlmsg_type & 0xff) == IPCTNL_MSG_CT_DELETE)
              ++r.delete_errors;
            else
              ++r.other_errors;
          }
        }
        off += NLMSG_ALIGN(h.nlmsg_len);
      }
    }
  };

  message_writer w;
  uint32_t seq = 0;
  uint64_t next_insert = 0, next_delete = 0, sent_events = 0;
  auto send_batch = [&](bool insert) {
    w.clear();
    for (unsigned i = 0; i < o.batch; ++i) {
      uint64_t id = insert ? next_insert++ : next_delete++;
      if (insert) {
        w.begin(IPCTNL_MSG_CT_NEW, NLM_F_CREATE | NLM_F_EXCL, ++seq);
        w.tuple(CTA_TUPLE_ORIG, client_addr(id), k_service, client_port(id), 53);
        w.tuple(CTA_TUPLE_REPLY, k_backend, client_addr(id), 5353, client_port(id));
        w.put(CTA_TIMEOUT, htonl(120));
      } else {
        w.begin(IPCTNL_MSG_CT_DELETE, 0, ++seq);
        w.tuple(CTA_TUPLE_ORIG, client_addr(id), k_service, client_port(id), 53);
      }
      w.end();
    }
    for (;;) {
      ssize_t n = sendto(s, w.bytes().data(), w.bytes().size(), 0,
                         reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
      if (n >= 0)
        break;
      if (errno != EINTR && errno != ENOBUFS && errno != EAGAIN)
        die(std::string("generator sendto: ") + std::strerror(errno));
    }
    (insert ? r.inserted : r.deleted) += o.batch;
    sent_events += o.batch;
    drain_errors();
  };

  r.start = clk::now();
  const auto stop_at = r.start + std::chrono::duration_cast<clk::duration>(
                                     std::chrono::duration<double>(o.duration_s));
  while (!g_interrupted) {
    auto now = clk::now();
    if (now >= stop_at)
      break;
    if (o.rate) {
      // Paced: the events sent so far are due at this point in time.
      auto due = r.start + std::chrono::duration_cast<clk::duration>(std::chrono::duration<double>(
                               static_cast<double>(sent_events) / static_cast<double>(o.rate)));
      if (due > now)
        std::this_thread::sleep_until(due);
    }
    send_batch(next_insert - next_delete < o.live);
  }
  while (next_delete < next_insert) // leave the table as it was: every entry destroyed
    send_batch(false);
  r.end = clk::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  drain_errors();
  close(s);
  return r;
}

// --- conntrack -E, run inside the namespace ---

struct conntrack_e {
  pid_t pid = -1;
  // Its stderr, where it warns of every ENOBUFS and at the end says how many events it showed:
  // a file, not a pipe, so that a flood of warnings cannot block it on a full pipe.
  int err_fd = -1;
  std::string output;

  conntrack_e(const std::string& ns, uint32_t rcvbuf, int cpu) {
    char path[] = "/tmp/nlbench-conntrack-e.XXXXXX";
    err_fd = mkstemp(path);
    if (err_fd < 0)
      die("mkstemp");
    unlink(path);
    pid = fork();
    if (pid == 0) {
      dup2(err_fd, 2);
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      if (cpu >= 0)
        pin(0, cpu);
      std::string b = std::to_string(rcvbuf);
      execlp("ip", "ip", "netns", "exec", ns.c_str(), "conntrack", "-E", "-b", b.c_str(),
             static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  // Its event socket is subscribed once /proc/<pid>/net/netlink lists one of its sockets as a
  // netfilter socket with groups. Returns {portid, drops} of that socket, or nothing.
  bool subscribed() const { return !subscribed_socket().empty(); }
  std::vector<std::string> subscribed_socket() const {
    const std::string proc = "/proc/" + std::to_string(pid);
    std::set<std::string> inodes;
    if (DIR* d = opendir((proc + "/fd").c_str())) {
      while (dirent* e = readdir(d)) {
        char link[256];
        ssize_t n = readlink((proc + "/fd/" + e->d_name).c_str(), link, sizeof link - 1);
        if (n > 9 && std::strncmp(link, "socket:[", 8) == 0)
          inodes.insert(std::string(link + 8, static_cast<size_t>(n) - 9));
      }
      closedir(d);
    }
    std::ifstream f(proc + "/net/netlink");
    std::string line;
    std::getline(f, line);
    while (std::getline(f, line)) {
      std::istringstream in(line);
      std::string sk, eth, portid, groups, rmem, wmem, dump, locks, drops, inode;
      in >> sk >> eth >> portid >> groups >> rmem >> wmem >> dump >> locks >> drops >> inode;
      if (eth == "12" && groups != "00000000" && inodes.count(inode))
        return {portid, drops};
    }
    return {};
  }
  // Stops it (SIGINT: it prints its count) and returns what it said.
  std::string finish(uint64_t& drops) {
    auto sock = subscribed_socket();
    drops = sock.size() == 2 ? std::stoull(sock[1]) : 0;
    kill(pid, SIGINT);
    waitpid(pid, nullptr, 0);
    pid = -1;
    char buf[4096];
    ssize_t n;
    off_t at = 0;
    while ((n = pread(err_fd, buf, sizeof buf, at)) > 0) {
      output.append(buf, static_cast<size_t>(n));
      at += n;
    }
    return output;
  }
  ~conntrack_e() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    close(err_fd);
  }
};

uint64_t shown_events(const std::string& out) {
  auto at = out.find(" flow events have been shown");
  if (at == std::string::npos)
    return 0;
  auto start = out.rfind(' ', at - 1);
  return std::stoull(out.substr(start + 1, at - start - 1));
}

size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1))
    ++n;
  return n;
}

// CPU time of one thread: utime + stime from /proc/self/task/<tid>/stat (clock ticks), and
// the scheduler's nanoseconds from schedstat when the kernel keeps them.
struct thread_cpu {
  double stat_s = 0;
  double sched_s = -1;
};
thread_cpu read_cpu(int tid) {
  thread_cpu c;
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close_paren = all.rfind(')');
  if (close_paren != std::string::npos) {
    std::istringstream in(all.substr(close_paren + 2));
    std::vector<std::string> fields;
    std::string x;
    while (in >> x)
      fields.push_back(x);
    // fields[0] is field 3 (state): utime is field 14, stime field 15
    if (fields.size() > 12)
      c.stat_s = static_cast<double>(std::stoull(fields[11]) + std::stoull(fields[12])) /
                 static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  std::ifstream ss("/proc/self/task/" + std::to_string(tid) + "/schedstat");
  uint64_t ns = 0;
  if (ss >> ns)
    c.sched_s = static_cast<double>(ns) / 1e9;
  return c;
}

void result(const char* metric, const std::string& value, const char* unit, const char* target,
            const char* verdict) {
  std::printf("RESULT|conntrack_ingest|%s|%s|%s|%s|%s\n", metric, value.c_str(), unit, target,
              verdict);
}
std::string fmt(double v, int decimals = 0) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}

} // namespace

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

int run(const options& o) {
  bench_netns ns;

  // The consumer's sink does what the conntrack actor does with a batch, here on the consumer
  // thread itself: the whole ingest path on one core.
  auto now_ns = [] {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now().time_since_epoch())
            .count());
  };
  conntrack_cache cache(1u << 20, 120ull * 1'000'000'000, now_ns);
  std::atomic<uint64_t> created{0}, destroyed{0}, dumped{0};
  std::atomic<int64_t> last_event_ns{0};
  auto sink = [&](ct_event_batch&& b) {
    if (b.dump_begins)
      cache.begin_resync(b.netns);
    uint64_t c = 0, d = 0, u = 0;
    for (const ct_event& ev : b.events) {
      switch (ev.kind) {
      case ct_event_kind::created:
        cache.insert(ev.entry, true);
        ++c;
        break;
      case ct_event_kind::destroyed:
        cache.remove(tuple_of(ev.entry, ev.entry.orig));
        ++d;
        break;
      case ct_event_kind::dumped:
        cache.insert(ev.entry, false);
        ++u;
        break;
      }
    }
    if (b.dump_ends)
      cache.end_resync(b.netns);
    created.fetch_add(c, std::memory_order_relaxed);
    destroyed.fetch_add(d, std::memory_order_relaxed);
    dumped.fetch_add(u, std::memory_order_relaxed);
    if (c + d)
      last_event_ns.store(static_cast<int64_t>(now_ns()), std::memory_order_relaxed);
  };

  conntrack_consumer_options co;
  co.netns_fd = ns.fd;
  co.netns_inode = ns.inode;
  co.receive_buffer_bytes = o.rcvbuf;
  auto started = conntrack_consumer::start(co, sink);
  if (auto* err = std::get_if<std::string>(&started))
    die("netlens consumer: " + *err);
  auto consumer = std::move(std::get<0>(started));
  if (consumer->wait_initial_dump(std::chrono::seconds(5)) != initial_dump_result::done)
    die("the initial dump did not complete");
  const int tid = consumer->thread_id();
  pin(tid, o.consumer_cpu);

  std::unique_ptr<conntrack_e> ce;
  if (o.conntrack_e) {
    ce = std::make_unique<conntrack_e>(ns.name, o.rcvbuf, o.conntrack_e_cpu);
    for (int i = 0; i < 500 && !ce->subscribed(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!ce->subscribed())
      die("conntrack -E did not subscribe to the events");
  }

  const std::string offered_text = o.rate ? fmt(static_cast<double>(o.rate)) : "max";
  const std::string ce_where = !o.conntrack_e          ? "not run"
                               : o.conntrack_e_cpu < 0 ? "not pinned"
                                                       : "CPU " + std::to_string(o.conntrack_e_cpu);
  std::printf("== conntrack_ingest: %.0f s, offered %s events/s (NEW + DESTROY of NAT'd UDP "
              "entries via ctnetlink, %u per request, %u alive), %u CPUs, load %s\n",
              o.duration_s, offered_text.c_str(), o.batch, o.live,
              std::thread::hardware_concurrency(), load_average().c_str());
  std::printf("   netlens consumer thread %d pinned to CPU %d (receive buffer %u bytes granted), "
              "generator CPU %d, conntrack -E %s\n",
              tid, o.consumer_cpu, consumer->stats().receive_buffer_bytes, o.generator_cpu,
              ce_where.c_str());
  std::fflush(stdout);

  const thread_cpu cpu0 = read_cpu(tid);
  const auto s0 = consumer->stats();
  generator_result g;
  std::exception_ptr gen_failure;
  std::thread gen([&] {
    try {
      g = generate(o, ns.fd);
    } catch (...) {
      gen_failure = std::current_exception();
    }
  });
  gen.join();
  if (gen_failure)
    std::rethrow_exception(gen_failure);

  // Drain: until netlens has every event the kernel made, or nothing moved for a second.
  const uint64_t expected = g.expected_events();
  uint64_t seen = 0, last_seen = ~0ull;
  auto quiet_since = clk::now();
  while (clk::now() - quiet_since < std::chrono::seconds(1)) {
    seen = consumer->stats().events - s0.events;
    if (seen >= expected)
      break;
    if (seen != last_seen) {
      last_seen = seen;
      quiet_since = clk::now();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const thread_cpu cpu1 = read_cpu(tid);
  const auto s1 = consumer->stats();
  // A resync still running (after ENOBUFS) is let finish: its sweep is what removes the entries
  // whose DESTROY was lost.
  for (int i = 0; i < 1000 && consumer->stats().state == consumer_state::dumping; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const auto s_end = consumer->stats();
  uint64_t kernel_entries = ~0ull;
  if (FILE* p = popen(("ip netns exec " + ns.name + " conntrack -C 2>/dev/null").c_str(), "r")) {
    unsigned long long n;
    if (std::fscanf(p, "%llu", &n) == 1)
      kernel_entries = n;
    pclose(p);
  }

  uint64_t ce_events = 0, ce_enobufs = 0, ce_drops = 0;
  std::string ce_out;
  if (ce) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500)); // let it print what it has
    ce_out = ce->finish(ce_drops);
    ce_events = shown_events(ce_out);
    ce_enobufs = count_of(ce_out, "ENOBUFS");
  }
  consumer->stop();
  consumer->close();
  const uint64_t stale = cache.stats().entries; // the kernel's table is empty again

  const double flood_s = std::chrono::duration<double>(g.end - g.start).count();
  const double offered = static_cast<double>(expected) / flood_s;
  const uint64_t got = s1.events - s0.events;
  const uint64_t lost_nl = expected > got ? expected - got : 0;
  const double nl_rate = static_cast<double>(got) / flood_s;
  const double cpu_stat = cpu1.stat_s - cpu0.stat_s;
  const double cpu_sched = cpu1.sched_s >= 0 ? cpu1.sched_s - cpu0.sched_s : -1;
  const double cpu_s = cpu_sched >= 0 ? cpu_sched : cpu_stat;
  const double per_1000_ms = got ? cpu_s * 1000.0 / (static_cast<double>(got) / 1000.0) : 0;
  const double ce_rate = static_cast<double>(ce_events) / flood_s;
  const uint64_t lost_ce = expected > ce_events ? expected - ce_events : 0;

  std::printf("generator: %llu entries inserted, %llu deleted in %.2f s; errors: %llu insert, "
              "%llu delete, %llu other%s%s -> %llu events made, %.0f events/s\n",
              static_cast<unsigned long long>(g.inserted),
              static_cast<unsigned long long>(g.deleted), flood_s,
              static_cast<unsigned long long>(g.insert_errors),
              static_cast<unsigned long long>(g.delete_errors),
              static_cast<unsigned long long>(g.other_errors), g.first_error ? ", first: " : "",
              g.first_error ? std::strerror(-g.first_error) : "",
              static_cast<unsigned long long>(expected), offered);
  std::printf("netlens:   %llu events (%llu NEW, %llu DESTROY) = %.0f events/s; lost %llu; "
              "ENOBUFS %llu, resyncs %llu, malformed %llu; batches %llu; cache: %llu entries, "
              "%llu inserted, %llu removed; consumer thread CPU %.3f s (stat %.2f s) = %.3f ms "
              "per 1,000 events\n",
              static_cast<unsigned long long>(got), static_cast<unsigned long long>(created.load()),
              static_cast<unsigned long long>(destroyed.load()), nl_rate,
              static_cast<unsigned long long>(lost_nl),
              static_cast<unsigned long long>(s1.enobufs - s0.enobufs),
              static_cast<unsigned long long>(s1.resyncs - s0.resyncs),
              static_cast<unsigned long long>(s1.malformed),
              static_cast<unsigned long long>(s1.batches - s0.batches),
              static_cast<unsigned long long>(cache.stats().entries),
              static_cast<unsigned long long>(cache.stats().inserted),
              static_cast<unsigned long long>(cache.stats().removed), cpu_s, cpu_stat, per_1000_ms);
  std::printf("after the flood: kernel table %lld entries, netlens cache %llu (stale), %llu "
              "swept by %llu resync(s), %llu dump(s) failed\n",
              kernel_entries == ~0ull ? -1ll : static_cast<long long>(kernel_entries),
              static_cast<unsigned long long>(stale),
              static_cast<unsigned long long>(cache.stats().swept),
              static_cast<unsigned long long>(s_end.resyncs - s0.resyncs),
              static_cast<unsigned long long>(s_end.dumps_failed - s0.dumps_failed));
  if (ce)
    std::printf("conntrack -E: %llu events = %.0f events/s; lost %llu; ENOBUFS warnings %llu, "
                "socket drops %llu\n",
                static_cast<unsigned long long>(ce_events), ce_rate,
                static_cast<unsigned long long>(lost_ce),
                static_cast<unsigned long long>(ce_enobufs),
                static_cast<unsigned long long>(ce_drops));

  const bool nl_ok = nl_rate >= 100'000 && lost_nl == 0 && s1.enobufs == s0.enobufs && stale == 0;
  result("offered events/s", fmt(offered), "ev/s", "-", "-");
  result("netlens events/s", fmt(nl_rate), "ev/s", ">= 100000 no loss", nl_ok ? "PASS" : "FAIL");
  result("netlens events lost", std::to_string(lost_nl), "events", "0",
         lost_nl == 0 ? "PASS" : "FAIL");
  result("netlens ENOBUFS", std::to_string(s1.enobufs - s0.enobufs), "count", "0",
         s1.enobufs == s0.enobufs ? "PASS" : "FAIL");
  result("netlens stale entries after flood", std::to_string(stale), "entries", "0",
         stale == 0 ? "PASS" : "FAIL");
  result("netlens CPU per 1000 events", fmt(per_1000_ms, 3), "ms", "-", "-");
  if (ce) {
    result("conntrack -E events/s", fmt(ce_rate), "ev/s", "-", "-");
    result("conntrack -E events lost", std::to_string(lost_ce), "events", "-", "-");
  }
  return nl_ok ? 0 : 1;
}

int main(int argc, char** argv) {
  try {
    options o = parse(argc, argv);
    if (geteuid() != 0)
      die("must run as root (network namespaces, ctnetlink)");
    std::signal(SIGINT, [](int) { g_interrupted = true; });
    std::signal(SIGTERM, [](int) { g_interrupted = true; });
    std::signal(SIGPIPE, SIG_IGN);
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_conntrack_ingest: %s\n", e.what());
    return 2;
  }
}
