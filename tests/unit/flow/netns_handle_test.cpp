// The handle against this process's own namespace and a dead child: no privileges needed.
#include <catch2/catch.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <variant>

#include "flow/netns_handle.hpp"
#include "tests/support/open_fds.hpp"

using netlens::testing::open_fds;

using namespace netlens;

namespace {

uint32_t self_netns_inode() {
  struct stat st {};
  REQUIRE(stat("/proc/self/ns/net", &st) == 0);
  return static_cast<uint32_t>(st.st_ino);
}

// A pid that certainly exited: a child that was reaped.
pid_t dead_pid() {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0)
    _exit(0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return pid;
}

} // namespace

TEST_CASE("netns_handle opens the namespace of a live pid", "[netns][netns_handle]") {
  const size_t before = open_fds();
  {
    auto r = netns_handle::open_for_pid(getpid());
    REQUIRE(std::holds_alternative<netns_handle>(r));
    auto& h = std::get<netns_handle>(r);
    CHECK(h.valid());
    CHECK(h.inode() == self_netns_inode());
    CHECK(h.opened_from() == getpid());
    struct stat st {};
    REQUIRE(fstat(h.fd(), &st) == 0);
    CHECK(static_cast<uint32_t>(st.st_ino) == h.inode());
    CHECK((fcntl(h.fd(), F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(netns_handle::inode_of_pid(getpid()) == h.inode());

    netns_handle moved = std::move(h);
    CHECK_FALSE(h.valid());
    CHECK(moved.valid());
    CHECK(open_fds() == before + 1);
  }
  CHECK(open_fds() == before);
}

TEST_CASE("netns_handle refuses a namespace whose inode is not the one looked up",
          "[netns][netns_handle]") {
  const size_t before = open_fds();
  const uint32_t wrong = self_netns_inode() + 1;
  auto r = netns_handle::open_for_pid(getpid(), wrong);
  REQUIRE(std::holds_alternative<netns_error>(r));
  const auto& e = std::get<netns_error>(r);
  CHECK(e.code == netns_errc::inode_changed);
  CHECK(e.message.find(std::to_string(getpid())) != std::string::npos);
  CHECK(e.message.find(std::to_string(wrong)) != std::string::npos);
  CHECK(open_fds() == before); // the fd opened for the check is closed again
}

TEST_CASE("netns_handle refuses a dead pid with an error naming it", "[netns][netns_handle]") {
  const pid_t pid = dead_pid();
  auto r = netns_handle::open_for_pid(pid);
  REQUIRE(std::holds_alternative<netns_error>(r));
  const auto& e = std::get<netns_error>(r);
  CHECK(e.code == netns_errc::no_such_process);
  CHECK(e.message.find("pid " + std::to_string(pid)) != std::string::npos);
  netns_error err;
  CHECK(netns_handle::inode_of_pid(pid, &err) == 0);
  CHECK(err.code == netns_errc::no_such_process);
  CHECK(std::holds_alternative<netns_error>(netns_handle::open_for_pid(0)));
  CHECK(std::holds_alternative<netns_error>(netns_handle::open_for_pid(-5, 1)));
}

TEST_CASE("netns_handle reset and move-assignment close what they replace",
          "[netns][netns_handle]") {
  const int a = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int b = open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(a >= 0);
  REQUIRE(b >= 0);
  auto ha = netns_handle::adopt(a, 1);
  auto hb = netns_handle::adopt(b, 2);
  ha = std::move(hb);
  CHECK(fcntl(a, F_GETFD) == -1);
  CHECK(ha.fd() == b);
  CHECK(ha.inode() == 2);
  ha.reset();
  CHECK(fcntl(b, F_GETFD) == -1);
  CHECK_FALSE(ha.valid());
  CHECK(ha.inode() == 0);
}
