// The offset guesser against this kernel: every offset it guesses must be the one the
// kernel's own BTF states, guess after guess; the cache must survive corruption; nothing may
// stay behind. Needs root (BPF, TCP_REPAIR, a cgroup program). Tag: [kernel].
#include <catch2/catch.hpp>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "actors/offset_guesser/guess_offsets.hpp"
#include "actors/offset_guesser/guess_session.hpp"
#include "actors/offset_guesser/offset_cache.hpp"
#include "tests/support/open_fds.hpp"

using netlens::testing::open_fds;

using namespace netlens;

namespace {

const btf_type* skip_mods(const btf* b, uint32_t& id) {
  const btf_type* t = btf__type_by_id(b, id);
  while (t && (btf_is_mod(t) || btf_is_typedef(t))) {
    id = t->type;
    t = btf__type_by_id(b, id);
  }
  return t;
}

// Finds `name` among the members of struct/union `id`, descending into anonymous members;
// adds its byte offset to off and leaves its type in id.
bool find_member(const btf* b, uint32_t& id, const std::string& name, uint32_t& off) {
  const btf_type* t = skip_mods(b, id);
  if (!t || !btf_is_composite(t))
    return false;
  const btf_member* m = btf_members(t);
  for (uint16_t i = 0; i < btf_vlen(t); ++i, ++m) {
    uint32_t bits = btf_member_bit_offset(t, i);
    const char* n = btf__name_by_offset(b, m->name_off);
    if (n && name == n) {
      if (bits % 8 != 0 || btf_member_bitfield_size(t, i) != 0)
        return false; // a bitfield has no byte offset to guess
      off += bits / 8;
      id = m->type;
      return true;
    }
    if (!n || !*n) {
      uint32_t inner = m->type, inner_off = off + bits / 8;
      if (find_member(b, inner, name, inner_off)) {
        id = inner;
        off = inner_off;
        return true;
      }
    }
  }
  return false;
}

// The byte offset of a member path ("__sk_common", "skc_net", "net") in struct type_name.
std::optional<uint32_t> btf_offset(const btf* b, const char* type_name,
                                   std::vector<std::string> path) {
  int id = btf__find_by_name_kind(b, type_name, BTF_KIND_STRUCT);
  if (id < 0)
    return std::nullopt;
  uint32_t tid = static_cast<uint32_t>(id), off = 0;
  for (const auto& part : path)
    if (!find_member(b, tid, part, off))
      return std::nullopt;
  return off;
}

struct expected_field {
  const char* name;
  __u16 nl_offsets::*slot;
  const char* type;
  std::vector<std::string> path;
};

std::vector<expected_field> fields() {
  using o = nl_offsets;
  const std::string c = "__sk_common";
  return {
      {"skc_daddr", &o::skc_daddr, "sock", {c, "skc_daddr"}},
      {"skc_rcv_saddr", &o::skc_rcv_saddr, "sock", {c, "skc_rcv_saddr"}},
      {"skc_dport", &o::skc_dport, "sock", {c, "skc_dport"}},
      {"skc_num", &o::skc_num, "sock", {c, "skc_num"}},
      {"skc_family", &o::skc_family, "sock", {c, "skc_family"}},
      {"skc_state", &o::skc_state, "sock", {c, "skc_state"}},
      {"skc_flags", &o::skc_flags, "sock", {c, "skc_flags"}},
      {"skc_net", &o::skc_net, "sock", {c, "skc_net", "net"}},
      {"skc_v6_daddr", &o::skc_v6_daddr, "sock", {c, "skc_v6_daddr"}},
      {"skc_v6_rcv_saddr", &o::skc_v6_rcv_saddr, "sock", {c, "skc_v6_rcv_saddr"}},
      {"skc_cookie", &o::skc_cookie, "sock", {c, "skc_cookie"}},
      {"net_ns_inum", &o::net_ns_inum, "net", {"ns", "inum"}},
      {"sk_protocol", &o::sk_protocol, "sock", {"sk_protocol"}},
      {"sk_shutdown", &o::sk_shutdown, "sock", {"sk_shutdown"}},
      {"tcp_bytes_acked", &o::tcp_bytes_acked, "tcp_sock", {"bytes_acked"}},
      {"tcp_bytes_received", &o::tcp_bytes_received, "tcp_sock", {"bytes_received"}},
      {"tcp_segs_out", &o::tcp_segs_out, "tcp_sock", {"segs_out"}},
      {"tcp_segs_in", &o::tcp_segs_in, "tcp_sock", {"segs_in"}},
      {"tcp_srtt_us", &o::tcp_srtt_us, "tcp_sock", {"srtt_us"}},
      {"tcp_mdev_us", &o::tcp_mdev_us, "tcp_sock", {"mdev_us"}},
      {"tcp_total_retrans", &o::tcp_total_retrans, "tcp_sock", {"total_retrans"}},
      {"tcp_snd_una", &o::tcp_snd_una, "tcp_sock", {"snd_una"}},
      {"tcp_write_seq", &o::tcp_write_seq, "tcp_sock", {"write_seq"}},
      {"tcp_mstamp", &o::tcp_mstamp, "tcp_sock", {"tcp_mstamp"}},
  };
}

// nl_offsets as this kernel's BTF states it.
nl_offsets offsets_from_vmlinux_btf() {
  btf* b = btf__load_vmlinux_btf();
  REQUIRE(b != nullptr);
  nl_offsets o{};
  auto all = fields();
  REQUIRE(all.size() == sizeof(nl_offsets) / sizeof(__u16)); // a new member needs a line here
  for (const auto& f : all) {
    auto off = btf_offset(b, f.type, f.path);
    if (!off) {
      btf__free(b);
      FAIL("BTF has no " << f.type << " member for " << f.name);
    }
    o.*f.slot = static_cast<__u16>(*off);
  }
  btf__free(b);
  return o;
}

void check_equal(const nl_offsets& guessed, const nl_offsets& truth, int run) {
  for (const auto& f : fields()) {
    INFO("run " << run << ", field " << f.name);
    CHECK(guessed.*f.slot == truth.*f.slot);
  }
}

// A private cache directory, removed with everything in it.
struct temp_cache_dir {
  std::string path;
  temp_cache_dir() {
    char tmpl[] = "/tmp/netlens-offsets-test.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~temp_cache_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

} // namespace

TEST_CASE("every guessed offset is the one BTF states, on 50 consecutive guesses",
          "[kernel][offset_guesser]") {
  nl_offsets truth = offsets_from_vmlinux_btf();
  guess_settings settings; // no cache_dir: every guess is a fresh one
  uint32_t retried = 0;
  uint64_t slowest_us = 0;
  for (int run = 1; run <= 50; ++run) {
    guess_report r = guess_offsets(settings);
    INFO("run " << run << ": " << r.error);
    REQUIRE(r.ok);
    REQUIRE_FALSE(r.from_cache);
    check_equal(r.offsets, truth, run);
    retried += r.tries > 1;
    slowest_us = std::max(slowest_us, r.duration_us);
  }
  WARN("50 guesses: " << retried << " needed more than one try; slowest " << slowest_us / 1000
                      << " ms");
  CHECK(slowest_us < 1000000);
}

TEST_CASE("a guess leaves no program, link or socket behind", "[kernel][offset_guesser]") {
  size_t fds_before = open_fds();
  std::vector<uint32_t> ids;
  {
    auto opened = guess_session::open();
    if (auto* err = std::get_if<std::string>(&opened))
      FAIL(*err);
    auto& session = *std::get<0>(opened);
    ids = session.program_ids();
    REQUIRE(ids.size() == 2);
    scan_outcome out = session.guess_once(std::chrono::milliseconds(1000));
    INFO(out.error_text());
    CHECK(out.ok);
    CHECK(open_fds() > fds_before); // the object's fds, while it lives
  }
  CHECK(open_fds() == fds_before);
  // Programs are freed after an RCU grace period: poll.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (uint32_t id : ids) {
    int fd;
    while ((fd = bpf_prog_get_fd_by_id(id)) >= 0 && std::chrono::steady_clock::now() < deadline) {
      close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (fd >= 0)
      close(fd);
    INFO("program " << id);
    CHECK(fd < 0);
  }
}

TEST_CASE("a try that cannot finish in time fails by what it waited for, after every try",
          "[kernel][offset_guesser]") {
  guess_settings settings;
  settings.max_tries = 2;
  settings.try_timeout_ms = 0; // over before the first phase ends
  guess_report r = guess_offsets(settings);
  CHECK_FALSE(r.ok);
  CHECK(r.tries == 2);
  CHECK(r.error == "offset guessing failed after 2 tries: timed out after 0 ms "
                   "(offset_guesser.try_timeout_ms) waiting for the loopback connections");
  CHECK(r.duration_us < 1000000);
}

TEST_CASE("the cache answers the next guess, a corrupt cache file is detected and re-guessed",
          "[kernel][offset_guesser]") {
  nl_offsets truth = offsets_from_vmlinux_btf();
  temp_cache_dir dir;
  guess_settings settings;
  settings.cache_dir = dir.path + "/nested"; // created on first write
  std::string file = offsets_cache_path(settings.cache_dir, kernel_release());

  guess_report first = guess_offsets(settings);
  INFO(first.error);
  REQUIRE(first.ok);
  CHECK_FALSE(first.from_cache);
  CHECK(first.cache_note.empty());
  check_equal(first.offsets, truth, 1);

  guess_report cached = guess_offsets(settings);
  REQUIRE(cached.ok);
  CHECK(cached.from_cache);
  CHECK(cached.tries == 0);
  check_equal(cached.offsets, truth, 2);

  auto corrupt = [&](auto&& damage) {
    std::string bytes;
    {
      std::ifstream in(file, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    REQUIRE(bytes.size() > 20);
    damage(bytes);
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };

  SECTION("a flipped bit in the offsets") {
    // The offsets sit just before the 8-byte checksum: a wrong offset that still looks like
    // one is what a checksum is for.
    corrupt([](std::string& b) { b[b.size() - 10] ^= 0x04; });
    guess_report again = guess_offsets(settings);
    INFO(again.error);
    REQUIRE(again.ok);
    CHECK_FALSE(again.from_cache);
    CHECK(again.cache_note == file + " fails its checksum; guessed again");
    check_equal(again.offsets, truth, 3);
  }
  SECTION("a truncated file") {
    corrupt([](std::string& b) { b.resize(b.size() / 2); });
    guess_report again = guess_offsets(settings);
    REQUIRE(again.ok);
    CHECK_FALSE(again.from_cache);
    CHECK(again.cache_note.find("bytes, not") != std::string::npos);
    check_equal(again.offsets, truth, 3);
  }
  SECTION("a sound file written for another kernel release, under this one's name") {
    std::string other = kernel_release();
    other.back() = other.back() == 'x' ? 'y' : 'x';
    REQUIRE(write_offsets_cache(file, other, truth).empty());
    guess_report again = guess_offsets(settings);
    REQUIRE(again.ok);
    CHECK_FALSE(again.from_cache);
    CHECK(again.cache_note == file + " was written for another kernel release; guessed again");
  }
  // The re-guess wrote a sound file again.
  guess_report after = guess_offsets(settings);
  REQUIRE(after.ok);
  CHECK(after.from_cache);
  check_equal(after.offsets, truth, 4);
}
