// libbpf prints the kernel's extended ack ("Kernel error message: ...") at warning level for
// every netlink request that fails, including the ones whose failure is the answer the caller
// wanted: "is there a filter of ours on this hook?" asked on every device of every namespace by
// the leftover sweep. While an expected_kernel_errors lives on a thread, the agent's libbpf log
// callback (which runs on the thread that called libbpf) shows those lines at debug level, so a
// healthy host's start logs no warning; a failure the caller did not expect still shows.
#pragma once

namespace netlens {

class expected_kernel_errors {
public:
  expected_kernel_errors() { ++depth(); }
  ~expected_kernel_errors() { --depth(); }
  expected_kernel_errors(const expected_kernel_errors&) = delete;
  expected_kernel_errors& operator=(const expected_kernel_errors&) = delete;

  static bool active() { return depth() > 0; }

private:
  static int& depth() {
    thread_local int d = 0;
    return d;
  }
};

} // namespace netlens
