// FNV-1a, 64 bits: the one non-cryptographic hash of netlens (hash-map keys made of plain
// bytes, cache keys, file checksums).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace netlens {

constexpr uint64_t k_fnv1a_basis = 14695981039346656037ull;
constexpr uint64_t k_fnv1a_prime = 1099511628211ull;

// Continues the hash h over n bytes (start with k_fnv1a_basis).
inline uint64_t fnv1a(const void* data, size_t n, uint64_t h = k_fnv1a_basis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i)
    h = (h ^ p[i]) * k_fnv1a_prime;
  return h;
}

inline uint64_t fnv1a(std::string_view bytes, uint64_t h = k_fnv1a_basis) {
  return fnv1a(bytes.data(), bytes.size(), h);
}

} // namespace netlens
