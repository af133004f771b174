// Why a TCP connection closed before it was established, from the socket's error the tracer
// read at that close (nl_conn.sk_err). Plain C++, no CAF: the tracer counts failures by it, the
// API names them in JSON and the table.
#pragma once

#include <cerrno>
#include <cstdint>
#include <string_view>

#include "bpf/netlens_records.h"

namespace netlens {

enum class connect_failure : uint8_t {
  aborted,     // no error: the application closed the socket before the handshake completed
  refused,     // ECONNREFUSED: a reset answered the SYN (no listener)
  timeout,     // ETIMEDOUT: the SYN retransmissions ran out
  reset,       // ECONNRESET
  unreachable, // EHOSTUNREACH, ENETUNREACH: an ICMP error said so
  other,       // any other error (the errno is in sk_err)
  unknown,     // the build could not read the error (prebuilt)
};
inline constexpr size_t k_connect_failure_kinds = 7;

inline connect_failure classify_connect_failure(uint8_t sk_err) {
  switch (sk_err) {
  case 0:
    return connect_failure::aborted;
  case ECONNREFUSED:
    return connect_failure::refused;
  case ETIMEDOUT:
    return connect_failure::timeout;
  case ECONNRESET:
    return connect_failure::reset;
  case EHOSTUNREACH:
  case ENETUNREACH:
    return connect_failure::unreachable;
  case NL_SK_ERR_UNKNOWN:
    return connect_failure::unknown;
  default:
    return connect_failure::other;
  }
}

inline std::string_view connect_failure_name(connect_failure f) {
  switch (f) {
  case connect_failure::aborted:
    return "aborted";
  case connect_failure::refused:
    return "refused";
  case connect_failure::timeout:
    return "timeout";
  case connect_failure::reset:
    return "reset";
  case connect_failure::unreachable:
    return "unreachable";
  case connect_failure::other:
    return "other";
  case connect_failure::unknown:
    return "unknown";
  }
  return "unknown";
}

// A closed TCP record that never reached ESTABLISHED (its counting base was never set).
inline bool closed_before_established(const nl_conn& c) {
  return c.protocol == 6 /* IPPROTO_TCP */ && !(c.flags & NL_FLAG_TCP_BASE_KNOWN);
}

} // namespace netlens
