#include "flow/address_text.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

namespace netlens {

// No allocation per address: this runs twice per connection of every answer.
std::string_view format_address(uint16_t family, const uint8_t* addr, char* buf) {
  if (!inet_ntop(family == AF_INET ? AF_INET : AF_INET6, addr, buf, INET6_ADDRSTRLEN))
    return "?";
  return buf;
}

} // namespace netlens
