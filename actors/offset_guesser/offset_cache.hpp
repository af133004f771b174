// The guessed-offsets cache file: one file per kernel release, so a restart on the same kernel
// skips the guess. Its format (magic, release, offsets, checksum) and its atomic write. Pure
// but for the file I/O: no kernel, no CAF.
#pragma once

#include <string>
#include <string_view>

#include "bpf/netlens_offsets.h"
#include "flow/kernel_release.hpp" // uname -r: what the cache is keyed by

namespace netlens {

// <cache_dir>/offsets-<release>.bin
std::string offsets_cache_path(const std::string& cache_dir, const std::string& release);

enum class cache_status { hit, missing, corrupt };

// A cache file read back: the offsets when status is hit; why (the path and what is wrong with
// the file) when it is corrupt.
struct cache_read {
  cache_status status = cache_status::missing;
  nl_offsets offsets{};
  std::string why;
};

// The bytes of a cache file for this release and these offsets.
std::string encode_offsets_cache(const std::string& release, const nl_offsets& offsets);
// The offsets in bytes written by encode_offsets_cache for this release, or, with status
// corrupt, what is wrong with them (without a path: "fails its checksum").
cache_read decode_offsets_cache(std::string_view bytes, const std::string& release);

// Reads a cache file written by write_offsets_cache for this release: missing when there is
// no file, corrupt when it is not sound or not for this release.
cache_read read_offsets_cache(const std::string& path, const std::string& release);
// Writes atomically (temporary file, then rename); creates cache_dir. "" or the error.
std::string write_offsets_cache(const std::string& path, const std::string& release,
                                const nl_offsets& offsets);

} // namespace netlens
