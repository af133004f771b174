// The one wake-up of netlens's threads: readable from notify() until clear(), so one notify
// wakes every thread polling it.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>

#include <atomic>
#include <thread>
#include <vector>

#include "flow/wake_signal.hpp"

using namespace netlens;

namespace {

bool readable(const wake_signal& w, int timeout_ms = 0) {
  pollfd p{w.fd(), POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

} // namespace

TEST_CASE("a wake signal is readable from notify until clear", "[wake_signal]") {
  auto opened = wake_signal::open();
  REQUIRE(std::holds_alternative<wake_signal>(opened));
  wake_signal w = std::move(std::get<wake_signal>(opened));
  REQUIRE(w);
  CHECK((fcntl(w.fd(), F_GETFD) & FD_CLOEXEC) != 0);
  CHECK_FALSE(readable(w));
  w.notify();
  w.notify(); // two before a read are one wake-up
  CHECK(readable(w));
  CHECK(readable(w)); // polling does not consume it
  w.clear();
  CHECK_FALSE(readable(w));
  w.clear(); // nothing to clear: returns at once (non-blocking)
  CHECK_FALSE(readable(w));
}

TEST_CASE("one notify wakes every thread polling the signal", "[wake_signal]") {
  wake_signal w = std::move(std::get<wake_signal>(wake_signal::open()));
  std::atomic<int> woken{0};
  std::vector<std::thread> pollers;
  for (int i = 0; i < 4; ++i)
    pollers.emplace_back([&] {
      if (readable(w, 10000))
        ++woken;
    });
  w.notify();
  for (auto& t : pollers)
    t.join();
  CHECK(woken == 4);
}

TEST_CASE("a wake signal closes its descriptor when it goes", "[wake_signal]") {
  int fd = -1;
  {
    wake_signal w = std::move(std::get<wake_signal>(wake_signal::open()));
    fd = w.fd();
    wake_signal moved = std::move(w);
    CHECK(moved.fd() == fd);
    CHECK_FALSE(w); // NOLINT: a moved-from signal holds nothing
    CHECK(fcntl(fd, F_GETFD) >= 0);
  }
  CHECK(fcntl(fd, F_GETFD) < 0);
}
