// Appends an unsigned integer in decimal, without a locale or an allocation of its own: the
// JSON and Prometheus writers put millions of numbers into text.
#pragma once

#include <charconv>
#include <cstdint>
#include <string>

namespace netlens {

inline void append_uint(std::string& out, uint64_t v) {
  char buf[24];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, res.ptr);
}

} // namespace netlens
