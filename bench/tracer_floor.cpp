// Loads the floor programs of bench/tracer_floor.bpf.c on the tracer's attach points, prints
// "ready", and keeps them attached until SIGTERM or SIGINT; then detaches and unloads them.
// run_churn runs churn beside it to measure what any tracer on those attach points costs.
//
//   bench_tracer_floor --level 0     # programs that return at once
//   bench_tracer_floor --level 1     # + a per-connection hash map entry, nothing emitted
//   bench_tracer_floor --level 2     # the map entry's insert and delete only
//   bench_tracer_floor --level 3     # the entry in socket-local storage instead
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include "flow/cgroup2_mount.hpp"
#include "tracer_floor.skel.h"

namespace {

int usage() {
  std::fprintf(stderr, "usage: bench_tracer_floor --level 0|1|2|3 [--cgroup DIR]  (default: the "
                       "first cgroup v2 mount)\n");
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  int level = -1;
  std::string cgroup = netlens::find_cgroup2_mount();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--level" && i + 1 < argc)
      level = std::atoi(argv[++i]);
    else if (a == "--cgroup" && i + 1 < argc)
      cgroup = argv[++i];
    else
      return usage();
  }
  if (level < 0 || level > 3)
    return usage();
  if (cgroup.empty()) {
    std::fprintf(stderr, "bench_tracer_floor: no cgroup v2 mount in /proc/mounts (--cgroup DIR)\n");
    return 3;
  }

  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  nl_tracer_floor* skel = nl_tracer_floor__open();
  if (!skel) {
    std::fprintf(stderr, "bench_tracer_floor: open: %s\n", std::strerror(errno));
    return 3;
  }
  skel->rodata->level = static_cast<__u32>(level);
  int rc = 0;
  int cg = -1;
  if (int err = nl_tracer_floor__load(skel); err != 0) {
    std::fprintf(stderr, "bench_tracer_floor: load: %s\n", std::strerror(-err));
    rc = 3;
  } else if (int err = nl_tracer_floor__attach(skel); err != 0) {
    // The skeleton attaches the tp_btf programs; the cgroup one is attached below.
    std::fprintf(stderr, "bench_tracer_floor: attach: %s\n", std::strerror(-err));
    rc = 3;
  } else if ((cg = open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
    std::fprintf(stderr, "bench_tracer_floor: %s: %s\n", cgroup.c_str(), std::strerror(errno));
    rc = 3;
  } else {
    bpf_program* progs[] = {skel->progs.fl_release, skel->progs.fl_sendmsg4,
                            skel->progs.fl_recvmsg4, skel->progs.fl_sendmsg6,
                            skel->progs.fl_recvmsg6};
    std::vector<bpf_link*> links;
    for (bpf_program* p : progs) {
      bpf_link* l = bpf_program__attach_cgroup(p, cg);
      if (!l) {
        std::fprintf(stderr, "bench_tracer_floor: attach %s: %s\n", bpf_program__name(p),
                     std::strerror(errno));
        rc = 3;
        break;
      }
      links.push_back(l);
    }
    // The socket lookup hook, in this process's network namespace (where the bench's traffic
    // runs), as the agent attaches its local-address program there.
    const int ns = rc == 0 ? open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC) : -1;
    if (rc == 0 && ns < 0) {
      std::fprintf(stderr, "bench_tracer_floor: /proc/self/ns/net: %s\n", std::strerror(errno));
      rc = 3;
    } else if (rc == 0) {
      bpf_link* l = bpf_program__attach_netns(skel->progs.fl_sk_lookup, ns);
      if (!l) {
        std::fprintf(stderr, "bench_tracer_floor: attach fl_sk_lookup: %s\n", std::strerror(errno));
        rc = 3;
      } else {
        links.push_back(l);
      }
    }
    if (ns >= 0)
      close(ns);
    if (rc == 0) {
      std::printf("ready level=%d\n", level);
      std::fflush(stdout);
      int sig = 0;
      sigwait(&stop, &sig);
    }
    for (bpf_link* l : links)
      bpf_link__destroy(l);
  }
  if (cg >= 0)
    close(cg);
  nl_tracer_floor__destroy(skel);
  return rc;
}
