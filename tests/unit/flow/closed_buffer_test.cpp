#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flow/closed_buffer.hpp"
#include "flow/closed_reader.hpp"

using namespace netlens;

namespace {

bool is_open(int fd) {
  return fcntl(fd, F_GETFD) >= 0;
}

} // namespace

TEST_CASE("the closed buffer's reading side owns descriptors of its own", "[closed_buffer]") {
  int fds[2];
  REQUIRE(pipe(fds) == 0); // stands for the tracer's maps: any descriptor duplicates alike
  closed_buffer_info info;
  info.map_fd = fds[0];
  info.batches_fd = fds[1];
  info.perf = true;
  info.perf_pages = 8;
  auto shared = closed_buffer::share(info);
  REQUIRE(std::holds_alternative<std::shared_ptr<const closed_buffer>>(shared));
  auto b = std::get<0>(shared);
  CHECK(b->map_fd() != fds[0]);
  CHECK(b->batches_fd() != fds[1]);
  struct stat a {
  }, c{};
  REQUIRE(fstat(fds[0], &a) == 0);
  REQUIRE(fstat(b->map_fd(), &c) == 0);
  CHECK(a.st_ino == c.st_ino); // the same object
  CHECK(b->settings().perf_pages == 8);

  // The tracer's object may go first: the reading side stays open until its last holder goes.
  close(fds[0]);
  close(fds[1]);
  const int map = b->map_fd(), batches = b->batches_fd();
  CHECK(is_open(map));
  b.reset();
  shared = std::string(); // the other holder
  CHECK_FALSE(is_open(map));
  CHECK_FALSE(is_open(batches));
}

TEST_CASE("a closed buffer that cannot be shared, or none at all, is an error that says so",
          "[closed_buffer]") {
  closed_buffer_info info;
  info.map_fd = 1 << 20; // no such descriptor
  auto shared = closed_buffer::share(info);
  REQUIRE(std::holds_alternative<std::string>(shared));
  CHECK_THAT(std::get<std::string>(shared), Catch::Contains("closed-buffer map fd"));

  auto opened = closed_reader::open(nullptr, [](std::vector<nl_conn>&&, uint64_t) {});
  REQUIRE(std::holds_alternative<std::string>(opened));
  CHECK_THAT(std::get<std::string>(opened), Catch::Contains("no closed buffer"));
}

TEST_CASE("the slot hands the running tracer's buffer, and a stale clear leaves a newer one",
          "[closed_buffer]") {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  closed_buffer_info info;
  info.map_fd = fds[0];
  auto first = std::get<0>(closed_buffer::share(info));
  auto second = std::get<0>(closed_buffer::share(info));
  closed_buffer_slot slot;
  CHECK_FALSE(slot.get());
  slot.put(first);
  CHECK(slot.get() == first);
  slot.put(second);           // a restarted tracer loaded again
  slot.clear_if(first.get()); // the old instance ends after that
  CHECK(slot.get() == second);
  slot.clear_if(second.get());
  CHECK_FALSE(slot.get());
  close(fds[0]);
  close(fds[1]);
}
