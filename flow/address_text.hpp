// An IP address as text, without allocating: the API, the console and the exporter's labels
// all print addresses this way.
#pragma once

#include <cstdint>
#include <string_view>

namespace netlens {

// Formats the 4 (AF_INET) or 16 (otherwise) bytes at addr into buf (INET6_ADDRSTRLEN bytes)
// and returns a view of it; "?" if it cannot be formatted.
std::string_view format_address(uint16_t family, const uint8_t* addr, char* buf);

} // namespace netlens
