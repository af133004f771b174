// The offsets cache file: what is written reads back, a damaged or foreign file is refused
// with what is wrong with it, and the format stays the one already on hosts.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "actors/offset_guesser/offset_cache.hpp"
#include "flow/fnv1a.hpp"

using namespace netlens;

namespace {

// Offsets no kernel has, each slot different.
nl_offsets made_up_offsets() {
  nl_offsets o{};
  auto* slots = reinterpret_cast<__u16*>(&o);
  for (size_t i = 0; i < sizeof(nl_offsets) / sizeof(__u16); ++i)
    slots[i] = static_cast<__u16>(1000 + 8 * i);
  return o;
}

bool same(const nl_offsets& a, const nl_offsets& b) {
  return std::memcmp(&a, &b, sizeof(nl_offsets)) == 0;
}

struct temp_dir {
  std::string path;
  temp_dir() {
    std::string tmpl = std::filesystem::temp_directory_path() / "netlens-offset-cache.XXXXXX";
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

const std::string k_release = "5.10.0-test";
// magic 8, release length 4, release, offsets size 4, offsets, checksum 8
const size_t k_file_size = 8 + 4 + k_release.size() + 4 + sizeof(nl_offsets) + 8;

} // namespace

TEST_CASE("an offsets cache file reads back what was written", "[offset_guesser]") {
  temp_dir dir;
  std::string path = offsets_cache_path(dir.path + "/nested", k_release);
  CHECK(path == dir.path + "/nested/offsets-5.10.0-test.bin");
  nl_offsets written = made_up_offsets();
  REQUIRE(write_offsets_cache(path, k_release, written) == "");

  cache_read got = read_offsets_cache(path, k_release);
  CHECK(got.status == cache_status::hit);
  CHECK(got.why.empty());
  CHECK(same(got.offsets, written));
  // Written through a temporary file that is renamed: nothing else is left in the directory.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path + "/nested")) {
    CHECK(e.path().string() == path);
    ++files;
  }
  CHECK(files == 1);
}

TEST_CASE("no cache file is missing, not corrupt", "[offset_guesser]") {
  temp_dir dir;
  cache_read got = read_offsets_cache(dir.path + "/offsets-none.bin", k_release);
  CHECK(got.status == cache_status::missing);
  CHECK(got.why.empty());
}

TEST_CASE("the cache format is the one files on hosts were written in", "[offset_guesser]") {
  std::string bytes = encode_offsets_cache(k_release, made_up_offsets());
  REQUIRE(bytes.size() == k_file_size);
  CHECK(bytes.substr(0, 8) == "NLOFFS01");
  uint32_t rlen = 0, olen = 0;
  std::memcpy(&rlen, bytes.data() + 8, 4);
  CHECK(rlen == k_release.size());
  CHECK(bytes.substr(12, k_release.size()) == k_release);
  std::memcpy(&olen, bytes.data() + 12 + k_release.size(), 4);
  CHECK(olen == sizeof(nl_offsets));
  // The checksum of these bytes as the files already written have it (FNV-1a 64 with the
  // basis the cache always used): a change to the format or the basis fails here.
  uint64_t sum = 0;
  std::memcpy(&sum, bytes.data() + bytes.size() - 8, 8);
  CHECK(sum == 0x607ed6a674796e37ull);
}

TEST_CASE("a damaged or foreign cache file is refused with what is wrong with it",
          "[offset_guesser]") {
  const nl_offsets written = made_up_offsets();
  std::string bytes = encode_offsets_cache(k_release, written);
  REQUIRE(decode_offsets_cache(bytes, k_release).status == cache_status::hit);

  auto refused = [&](const std::string& damaged, const std::string& release = k_release) {
    cache_read got = decode_offsets_cache(damaged, release);
    CHECK(got.status == cache_status::corrupt);
    CHECK(same(got.offsets, nl_offsets{})); // nothing of a refused file is handed out
    return got.why;
  };

  SECTION("truncated") {
    CHECK(refused(bytes.substr(0, bytes.size() / 2)) ==
          "has " + std::to_string(k_file_size / 2) + " bytes, not " + std::to_string(k_file_size));
    CHECK(refused("") == "has 0 bytes, not " + std::to_string(k_file_size));
  }
  SECTION("longer than the format") {
    CHECK(refused(bytes + "x") ==
          "has " + std::to_string(k_file_size + 1) + " bytes, not " + std::to_string(k_file_size));
  }
  SECTION("not a cache file") {
    bytes[0] = 'X';
    CHECK(refused(bytes) == "is not an offsets cache file (bad magic)");
  }
  SECTION("a flipped bit in the offsets") {
    bytes[bytes.size() - 10] ^= 0x04;
    CHECK(refused(bytes) == "fails its checksum");
  }
  SECTION("a flipped bit in the checksum") {
    bytes[bytes.size() - 1] ^= 0x01;
    CHECK(refused(bytes) == "fails its checksum");
  }
  SECTION("a sound file of another release of the same length") {
    CHECK(refused(bytes, "5.10.0-tesT") == "was written for another kernel release");
  }
  SECTION("a sound file of another layout") {
    // A build whose nl_offsets had another size: the size field differs, the checksum holds.
    uint32_t other = sizeof(nl_offsets) + 2;
    std::memcpy(bytes.data() + 12 + k_release.size(), &other, 4);
    uint64_t sum =
        fnv1a(std::string_view(bytes).substr(0, bytes.size() - 8), 1469598103934665603ull);
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
    CHECK(refused(bytes) == "holds offsets of another layout");
  }
}

TEST_CASE("reading a corrupt cache file names the file", "[offset_guesser]") {
  temp_dir dir;
  std::string path = offsets_cache_path(dir.path, k_release);
  REQUIRE(write_offsets_cache(path, k_release, made_up_offsets()) == "");
  std::filesystem::resize_file(path, 20);
  cache_read got = read_offsets_cache(path, k_release);
  CHECK(got.status == cache_status::corrupt);
  CHECK(got.why == path + " has 20 bytes, not " + std::to_string(k_file_size));
}

TEST_CASE("a cache directory that cannot be made is an error naming it", "[offset_guesser]") {
  temp_dir dir;
  std::string blocker = dir.path + "/not-a-dir";
  std::ofstream(blocker) << "a file where the cache directory would go";
  std::string err =
      write_offsets_cache(offsets_cache_path(blocker, k_release), k_release, made_up_offsets());
  CHECK(err.rfind("creating " + blocker + ": ", 0) == 0);
}
