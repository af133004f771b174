// Loopback addressing shared by the load generators.
#pragma once

#include <arpa/inet.h>
#include <cstdint>
#include <netinet/in.h>

namespace netlens::bench {

constexpr uint32_t k_localhost = 0x7f000001u; // 127.0.0.1, host order

inline sockaddr_in v4(uint32_t host_order_addr, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(host_order_addr);
  a.sin_port = htons(port);
  return a;
}

} // namespace netlens::bench
