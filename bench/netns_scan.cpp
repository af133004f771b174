// The netns resolver's start-up costs, with processes and namespaces the bench makes itself:
//  - the /proc scan (pid, netns inode, comm; then with the container id too) with N extra idle
//    processes, in ms per 10,000 processes: cold (the first scan of a set of processes, as at
//    agent start: the kernel builds their /proc entries then), median over several fresh sets,
//    and warm. Target: cold <= 100 ms per 10,000 (1 s on a host with 100k processes);
//  - M namespaces in the cache, each opened by pid from a child that unshared it: heap bytes
//    (mallinfo2) and fds per 1,000 namespaces, and, for a reader's judgement, the kernel memory
//    those handles keep alive once the processes are gone (Slab + Percpu from /proc/meminfo;
//    other load on the machine makes that one approximate).
// Every child dies with the bench (PR_SET_PDEATHSIG) and is killed and reaped at the end; the
// namespaces go with the last handle. Needs root for the namespaces; --namespaces 0 skips them.
//
//   build/bench/bench_netns_scan
//   build/bench/bench_netns_scan --processes 30000 --namespaces 2000 --runs 5 --cold-sets 5
//
// The last lines are machine-readable, as every bench prints them for bench/run_all:
// "RESULT|netns_scan|metric|value|unit|target|verdict".
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <variant>
#include <vector>

#include "actors/netns/container_id.hpp"
#include "actors/netns/netns_cache.hpp"
#include "flow/netns_handle.hpp"
#include "flow/proc_scan.hpp"
#include "tests/support/open_fds.hpp"

using netlens::testing::open_fds;

using namespace netlens;

namespace {

constexpr double k_scan_target_ms = 100; // per 10,000 processes

// The children the bench forked, killed and reaped on every way out of main.
class children {
public:
  ~children() { stop_all(); }

  // A child that waits in pause() until killed. With unshare_net it first moves to a network
  // namespace of its own. Reports on ready_fd, before pausing, 'y' (or 'n': unshare failed).
  bool spawn(bool unshare_net, int ready_fd) {
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid < 0)
      return false;
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent)
        _exit(0);
      const char ok = !unshare_net || unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
      (void)!write(ready_fd, &ok, 1);
      for (;;)
        pause();
    }
    pids_.push_back(pid);
    return true;
  }

  const std::vector<pid_t>& pids() const { return pids_; }

  void stop_all() {
    for (pid_t p : pids_)
      kill(p, SIGKILL);
    for (pid_t p : pids_)
      waitpid(p, nullptr, 0);
    pids_.clear();
  }

private:
  std::vector<pid_t> pids_;
};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// CPU time of this process (user + system): what a scan costs the host whatever else runs.
double cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

size_t rss_bytes() {
  long pages_total = 0, pages_resident = 0;
  std::ifstream f("/proc/self/statm");
  f >> pages_total >> pages_resident;
  return static_cast<size_t>(pages_resident) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// Slab + Percpu of /proc/meminfo, in bytes: where a network namespace's memory lives.
long kernel_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  long value = 0, sum = 0;
  std::string unit;
  while (f >> key >> value) {
    if (key == "Slab:" || key == "Percpu:")
      sum += value * 1024;
    std::getline(f, unit);
  }
  return sum;
}

struct scan_figures {
  size_t processes = 0;
  double cold_netns_ms = 0; // netns only
  double cold_ms = 0;       // netns + comm
  double cold_cpu_ms = 0;   // netns + comm, CPU time
  double warm_ms = 0;
  double warm_comm_ms = 0;
  double warm_container_ms = 0;
};

double per_10k(double ms, size_t processes) {
  return processes ? ms * 10000.0 / static_cast<double>(processes) : 0;
}

// Both ends closed on every way out.
struct pipe_pair {
  int fd[2] = {-1, -1};
  bool open() { return pipe2(fd, O_CLOEXEC) == 0; }
  ~pipe_pair() {
    for (int f : fd)
      if (f >= 0)
        close(f);
  }
};

// Waits for one byte from each of n children; how many said 'y'.
int await_ready(int fd, size_t n) {
  int yes = 0;
  std::vector<char> buf(4096);
  while (n > 0) {
    const ssize_t got = read(fd, buf.data(), std::min(n, buf.size()));
    if (got <= 0)
      break;
    yes += static_cast<int>(std::count(buf.begin(), buf.begin() + got, 'y'));
    n -= static_cast<size_t>(got);
  }
  return yes;
}

// Forks a set of fresh processes, times its first scan with cold_opts into cold_ms (wall) and
// cold_cpu_ms, then runs rounds of warm scans of each kind, and kills the set.
bool measure_scan(int processes, const proc_scan_options& cold_opts, int runs, scan_figures& out,
                  double& cold_ms, double& cold_cpu_ms) {
  children kids;
  pipe_pair ready;
  if (!ready.open())
    return false;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < processes; ++i) {
    if (!kids.spawn(false, ready.fd[1])) {
      std::fprintf(stderr, "fork failed after %d children: %s\n", i, std::strerror(errno));
      return false;
    }
  }
  // An agent starts on a host whose processes are idle, not on a fork storm: scan once every
  // child has reached pause().
  await_ready(ready.fd[0], kids.pids().size());
  std::printf("spawned %d sleeping processes in %.0f ms\n", processes, ms_since(t0));

  auto opened = proc_scanner::open();
  if (auto* err = std::get_if<std::string>(&opened)) {
    std::fprintf(stderr, "%s\n", err->c_str());
    return false;
  }
  auto& scanner = std::get<proc_scanner>(opened);
  size_t found_children = 0;
  std::vector<pid_t> kid_pids = kids.pids();
  std::sort(kid_pids.begin(), kid_pids.end());
  double last_cpu_ms = 0;
  auto timed_scan = [&](const proc_scan_options& opts, bool container) {
    const double c0 = cpu_ms();
    const auto s0 = std::chrono::steady_clock::now();
    auto stats = scanner.scan(opts, [&](const proc_process& p) {
      if (container)
        (void)container_id_of(scanner, p.pid);
      found_children += std::binary_search(kid_pids.begin(), kid_pids.end(), p.pid);
    });
    const double ms = ms_since(s0);
    last_cpu_ms = cpu_ms() - c0;
    out.processes = stats.processes;
    if (!stats.error.empty())
      std::fprintf(stderr, "scan: %s\n", stats.error.c_str());
    return ms;
  };

  // Start-up: the first scan after the processes were born (their /proc entries not cached).
  cold_ms = timed_scan(cold_opts, false);
  cold_cpu_ms = last_cpu_ms;
  if (found_children != static_cast<size_t>(processes))
    std::fprintf(stderr, "warning: the scan saw %zu of %d children\n", found_children, processes);
  if (runs > 0) {
    std::vector<double> netns_only, with_comm, with_container;
    for (int r = 0; r < runs; ++r) {
      netns_only.push_back(timed_scan({false}, false));
      with_comm.push_back(timed_scan({true}, false));
      with_container.push_back(timed_scan({true}, true));
    }
    out.warm_ms = median(netns_only);
    out.warm_comm_ms = median(with_comm);
    out.warm_container_ms = median(with_container);
  }
  const auto k0 = std::chrono::steady_clock::now();
  kids.stop_all();
  std::printf("killed and reaped them in %.0f ms\n", ms_since(k0));
  return true;
}

struct ns_figures {
  int namespaces = 0;
  double heap_per_1000 = 0; // bytes malloc handed out (mallinfo2), exact for the cache
  double rss_per_1000 = 0;  // bytes; lower when the heap reuses memory freed earlier
  double fds_per_1000 = 0;
  double kernel_per_1000 = 0; // bytes
  double open_ms = 0;
  size_t fds_left = 0; // after purge, beyond the start
};

bool measure_namespaces(int namespaces, ns_figures& out) {
  out.namespaces = namespaces;
  const long kernel_before = kernel_bytes();
  const size_t fds_at_start = open_fds();
  bool ok = true;
  {
    children kids;
    pipe_pair ready;
    if (!ready.open())
      return false;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < namespaces && ok; ++i)
      ok = kids.spawn(true, ready.fd[1]);
    const int made = await_ready(ready.fd[0], kids.pids().size());
    std::printf("%d children unshared their network namespace in %.0f ms\n", made, ms_since(t0));
    if (!ok || made != namespaces) {
      std::fprintf(stderr, "only %d of %d namespaces were made (root needed)\n", made, namespaces);
      return false;
    }

    netns_cache cache(static_cast<size_t>(namespaces) + 16, 16, nullptr);
    const size_t rss_before = rss_bytes();
    const size_t heap_before = mallinfo2().uordblks;
    const size_t fds_before = open_fds();
    const auto o0 = std::chrono::steady_clock::now();
    for (pid_t p : kids.pids()) {
      auto h = netns_handle::open_for_pid(p);
      if (auto* err = std::get_if<netns_error>(&h)) {
        std::fprintf(stderr, "%s\n", err->message.c_str());
        ok = false;
        break;
      }
      (void)cache.queue_device(std::get<netns_handle>(h).inode(), netns_device{1, "lo"});
      (void)cache.save_handle(std::move(std::get<netns_handle>(h)), p);
    }
    out.open_ms = ms_since(o0);
    const size_t rss_after = rss_bytes();
    const size_t heap_after = mallinfo2().uordblks;
    const size_t fds_after = open_fds();
    const double scale = 1000.0 / namespaces;
    out.rss_per_1000 = static_cast<double>(rss_after - rss_before) * scale;
    out.heap_per_1000 = static_cast<double>(heap_after - heap_before) * scale;
    out.fds_per_1000 = static_cast<double>(fds_after - fds_before) * scale;
    // The processes go; the namespaces stay, held by the cache's handles alone.
    kids.stop_all();
    out.kernel_per_1000 = static_cast<double>(kernel_bytes() - kernel_before) * scale;
    if (cache.open_handles() != static_cast<size_t>(namespaces))
      ok = false;
    (void)cache.purge();
  }
  const size_t fds_now = open_fds();
  out.fds_left = fds_now > fds_at_start ? fds_now - fds_at_start : 0;
  return ok;
}

const char* verdict(bool pass) {
  return pass ? "PASS" : "FAIL";
}

} // namespace

int main(int argc, char** argv) {
  int processes = 10000, namespaces = 1000, runs = 5, cold_sets = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--processes") == 0 && i + 1 < argc) {
      processes = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--namespaces") == 0 && i + 1 < argc) {
      namespaces = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--cold-sets") == 0 && i + 1 < argc) {
      cold_sets = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: %s [--processes N] [--namespaces M] [--runs R] [--cold-sets S]\n",
                   argv[0]);
      return 2;
    }
  }
  if (processes < 1 || namespaces < 0 || runs < 1 || cold_sets < 1) {
    std::fprintf(stderr, "--processes, --runs and --cold-sets must be at least 1, --namespaces at "
                         "least 0\n");
    return 2;
  }
  // One fd per cached namespace, plus the bench's own.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }

  scan_figures scan;
  // A dead process's /proc entries go with it, so each set's first scan is cold. Cold scans
  // vary with what the kernel's slab caches hold and with the machine's load: the median over
  // cold_sets sets of each kind, alternating; the last set also runs the warm rounds.
  std::vector<double> cold_netns, cold_comm, cold_comm_cpu;
  for (int set = 0; set < cold_sets; ++set) {
    double ms = 0, cpu = 0;
    if (!measure_scan(processes, {false}, 0, scan, ms, cpu))
      return 1;
    cold_netns.push_back(ms);
    if (!measure_scan(processes, {true}, set + 1 == cold_sets ? runs : 0, scan, ms, cpu))
      return 1;
    cold_comm.push_back(ms);
    cold_comm_cpu.push_back(cpu);
  }
  auto list = [](const std::vector<double>& v) {
    std::string out;
    for (double x : v)
      out += (out.empty() ? "" : ", ") + std::to_string(static_cast<int>(x + 0.5));
    return out;
  };
  std::printf("cold scans, ms per set: netns only %s; netns + comm %s (CPU %s)\n",
              list(cold_netns).c_str(), list(cold_comm).c_str(), list(cold_comm_cpu).c_str());
  scan.cold_netns_ms = median(cold_netns);
  scan.cold_ms = median(cold_comm);
  scan.cold_cpu_ms = median(cold_comm_cpu);
  const double cold = per_10k(scan.cold_ms, scan.processes);
  std::printf("scan of %zu processes: cold, median of %d sets: %.1f ms netns only, %.1f ms netns "
              "+ comm; warm, median of %d: %.1f ms netns only, %.1f ms + comm, %.1f ms + comm + "
              "container id\n",
              scan.processes, cold_sets, scan.cold_netns_ms, scan.cold_ms, runs, scan.warm_ms,
              scan.warm_comm_ms, scan.warm_container_ms);

  ns_figures ns;
  bool ns_ok = true;
  if (namespaces > 0) {
    ns_ok = measure_namespaces(namespaces, ns);
    if (ns_ok)
      std::printf("%d namespaces opened by pid and cached in %.0f ms; %zu fds left after purge\n",
                  namespaces, ns.open_ms, ns.fds_left);
  }

  std::printf("RESULT|netns_scan|start-up scan (netns + comm), cold, per 10000 processes|%.1f|ms|"
              "<= %.0f|%s\n",
              cold, k_scan_target_ms, verdict(cold <= k_scan_target_ms));
  std::printf("RESULT|netns_scan|start-up scan (netns + comm), cold, CPU time per 10000 "
              "processes|%.1f|ms|-|-\n",
              per_10k(scan.cold_cpu_ms, scan.processes));
  std::printf("RESULT|netns_scan|start-up scan (netns only), cold, per 10000 processes|%.1f|ms|"
              "-|-\n",
              per_10k(scan.cold_netns_ms, scan.processes));
  std::printf("RESULT|netns_scan|scan, netns only, warm, per 10000 processes|%.1f|ms|-|-\n",
              per_10k(scan.warm_ms, scan.processes));
  std::printf("RESULT|netns_scan|scan, netns + comm, warm, per 10000 processes|%.1f|ms|-|-\n",
              per_10k(scan.warm_comm_ms, scan.processes));
  std::printf("RESULT|netns_scan|scan, netns + comm + container id, warm, per 10000 "
              "processes|%.1f|ms|-|-\n",
              per_10k(scan.warm_container_ms, scan.processes));
  if (namespaces > 0 && ns_ok) {
    std::printf("RESULT|netns_scan|user-space heap per 1000 cached namespaces|%.1f|KiB|-|-\n",
                ns.heap_per_1000 / 1024);
    std::printf("RESULT|netns_scan|user-space RSS growth per 1000 cached namespaces|%.1f|KiB|-|-\n",
                ns.rss_per_1000 / 1024);
    std::printf("RESULT|netns_scan|fds per 1000 cached namespaces|%.0f|fds|<= 1000|%s\n",
                ns.fds_per_1000, verdict(ns.fds_per_1000 <= 1000.5));
    std::printf("RESULT|netns_scan|kernel memory held per 1000 cached namespaces (approx.)|%.1f|"
                "MiB|-|-\n",
                ns.kernel_per_1000 / (1024.0 * 1024.0));
    std::printf("RESULT|netns_scan|fds left open after purge|%zu|fds|0|%s\n", ns.fds_left,
                verdict(ns.fds_left == 0));
  }
  // The verdicts are in the RESULT lines; the exit code says whether everything was measured.
  return ns_ok ? 0 : 1;
}
