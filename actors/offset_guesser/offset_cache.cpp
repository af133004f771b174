#include "actors/offset_guesser/offset_cache.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <unistd.h>

#include "flow/errno_text.hpp"
#include "flow/fnv1a.hpp"

namespace netlens {
namespace {

// The cache files were written with this basis (a digit short of FNV's own); it stays, so the
// files already on hosts still check.
constexpr uint64_t k_cache_checksum_basis = 1469598103934665603ull;

uint64_t checksum(std::string_view bytes) {
  return fnv1a(bytes, k_cache_checksum_basis);
}

constexpr char k_cache_magic[8] = {'N', 'L', 'O', 'F', 'F', 'S', '0', '1'};

cache_read corrupt(std::string why) {
  cache_read r;
  r.status = cache_status::corrupt;
  r.why = std::move(why);
  return r;
}

} // namespace

std::string offsets_cache_path(const std::string& cache_dir, const std::string& release) {
  return cache_dir + "/offsets-" + release + ".bin";
}

// Layout: magic, release length (u32), release, sizeof(nl_offsets) (u32), nl_offsets, then
// the FNV-1a 64 of everything before it. Integers in host order: the file never leaves the host.
std::string encode_offsets_cache(const std::string& release, const nl_offsets& offsets) {
  std::string data(k_cache_magic, sizeof(k_cache_magic));
  uint32_t rlen = static_cast<uint32_t>(release.size());
  uint32_t olen = sizeof(nl_offsets);
  data.append(reinterpret_cast<const char*>(&rlen), 4);
  data += release;
  data.append(reinterpret_cast<const char*>(&olen), 4);
  data.append(reinterpret_cast<const char*>(&offsets), sizeof(offsets));
  uint64_t sum = checksum(data);
  data.append(reinterpret_cast<const char*>(&sum), 8);
  return data;
}

cache_read decode_offsets_cache(std::string_view data, const std::string& release) {
  size_t want = sizeof(k_cache_magic) + 4 + release.size() + 4 + sizeof(nl_offsets) + 8;
  if (data.size() != want)
    return corrupt("has " + std::to_string(data.size()) + " bytes, not " + std::to_string(want));
  if (std::memcmp(data.data(), k_cache_magic, sizeof(k_cache_magic)) != 0)
    return corrupt("is not an offsets cache file (bad magic)");
  uint64_t sum;
  std::memcpy(&sum, data.data() + data.size() - 8, 8);
  if (sum != checksum(data.substr(0, data.size() - 8)))
    return corrupt("fails its checksum");
  size_t pos = sizeof(k_cache_magic);
  uint32_t rlen, olen;
  std::memcpy(&rlen, data.data() + pos, 4);
  pos += 4;
  if (rlen != release.size() || data.compare(pos, rlen, release) != 0)
    return corrupt("was written for another kernel release");
  pos += rlen;
  std::memcpy(&olen, data.data() + pos, 4);
  pos += 4;
  if (olen != sizeof(nl_offsets))
    return corrupt("holds offsets of another layout");
  cache_read r;
  r.status = cache_status::hit;
  std::memcpy(&r.offsets, data.data() + pos, sizeof(nl_offsets));
  return r;
}

cache_read read_offsets_cache(const std::string& path, const std::string& release) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return {};
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  cache_read r = decode_offsets_cache(data, release);
  if (r.status == cache_status::corrupt)
    r.why = path + " " + r.why;
  return r;
}

std::string write_offsets_cache(const std::string& path, const std::string& release,
                                const nl_offsets& offsets) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (ec)
    return "creating " + std::filesystem::path(path).parent_path().string() + ": " + ec.message();
  std::string data = encode_offsets_cache(release, offsets);
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out.flush())
      return "writing " + tmp + ": " + errno_text(errno);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    std::remove(tmp.c_str());
    return "renaming " + tmp + " to " + path + ": " + errno_text(e);
  }
  return {};
}

} // namespace netlens
