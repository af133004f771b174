// An IPFIX collector as written in export.ipfix.collectors ("host:port"). The loader validates
// the configuration with this parser and the exporter resolves the same text with it at run time,
// so a value that passes check-config is one the exporter can use.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace netlens {

struct collector_address {
  // IPv4 or IPv6 address in its canonical text form (inet_ntop's, no brackets), or the host
  // name in lower case: two spellings of one collector give the same host.
  std::string host;
  uint16_t port = 0;      // 1 to 65535
  bool numeric = false;   // host is an address literal; false: a name to resolve
  int family = AF_UNSPEC; // AF_INET or AF_INET6 for a literal, AF_UNSPEC for a host name
};

inline bool operator==(const collector_address& a, const collector_address& b) {
  return a.host == b.host && a.port == b.port && a.numeric == b.numeric && a.family == b.family;
}
inline bool operator!=(const collector_address& a, const collector_address& b) {
  return !(a == b);
}

// Accepts "192.0.2.1:4739", "[2001:db8::1]:4739" (an IPv6 literal needs its brackets) and
// "collector.example.org:4739" (an RFC 1123 host name: labels of letters, digits and '-', at
// most 63 bytes each and 253 in all). The string alternative says in one line what is wrong,
// without naming the value or the key: the caller adds those.
std::variant<collector_address, std::string> parse_collector_address(std::string_view text);

} // namespace netlens
