#include "config/collector_address.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdio>

namespace netlens {
namespace {

constexpr std::size_t k_max_host_name = 253;
constexpr std::size_t k_max_label = 63;

// The value itself is quoted by the caller; a single character is shown here only when it
// cannot break the one-line message.
std::string character_text(unsigned char ch) {
  if (ch == ' ')
    return "a space";
  if (ch > 0x20 && ch < 0x7f && ch != '\'')
    return std::string("'") + static_cast<char>(ch) + "'";
  char buf[16];
  std::snprintf(buf, sizeof buf, "byte 0x%02X", ch);
  return buf;
}

bool is_digit(char ch) {
  return ch >= '0' && ch <= '9';
}

bool is_host_name_char(char ch) {
  return is_digit(ch) || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '-' ||
         ch == '.';
}

std::variant<uint16_t, std::string> parse_port(std::string_view text) {
  if (text.empty())
    return std::string("missing port number after ':'");
  if (!std::all_of(text.begin(), text.end(), is_digit))
    return std::string("port is not a number");
  const auto significant = text.find_first_not_of('0');
  const auto digits = significant == std::string_view::npos ? 0 : text.size() - significant;
  if (digits > 5)
    return std::string("port is out of range [1, 65535]");
  uint32_t port = 0;
  for (char ch : text)
    port = port * 10 + static_cast<uint32_t>(ch - '0');
  if (port < 1 || port > 65535)
    return "port " + std::to_string(port) + " is out of range [1, 65535]";
  return static_cast<uint16_t>(port);
}

// RFC 1123 host name; returns what is wrong, or an empty string.
std::string host_name_problem(std::string_view host) {
  const auto bad = std::find_if_not(host.begin(), host.end(), is_host_name_char);
  if (bad != host.end())
    return "host name contains " + character_text(static_cast<unsigned char>(*bad)) +
           "; only letters, digits, '-' and '.' are allowed";
  if (host.size() > k_max_host_name)
    return "host name is " + std::to_string(host.size()) + " bytes; at most " +
           std::to_string(k_max_host_name);
  std::string_view last_label;
  for (std::size_t start = 0;;) {
    const auto dot = host.find('.', start);
    const auto label = host.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (label.empty())
      return "host name has an empty label (a leading, trailing or doubled '.')";
    if (label.size() > k_max_label)
      return "host name label is " + std::to_string(label.size()) + " bytes; at most " +
             std::to_string(k_max_label);
    if (label.front() == '-' || label.back() == '-')
      return "a host name label cannot start or end with '-'";
    last_label = label;
    if (dot == std::string_view::npos)
      break;
    start = dot + 1;
  }
  // The resolver reads "10.1" or "300.1.1.1" as numbers (inet_aton), not as names.
  if (std::all_of(last_label.begin(), last_label.end(), is_digit))
    return "neither an IPv4 address nor a host name (a host name's last label is not all "
           "digits)";
  return {};
}

std::string canonical(int family, const void* address) {
  char text[INET6_ADDRSTRLEN];
  return inet_ntop(family, address, text, sizeof text) ? text : "";
}

} // namespace

std::variant<collector_address, std::string> parse_collector_address(std::string_view text) {
  if (text.empty())
    return std::string("is empty; expected host:port");

  collector_address out;
  std::string_view port_text;
  if (text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos)
      return std::string("unterminated IPv6 literal: no ']'");
    const std::string host(text.substr(1, close - 1));
    const auto rest = text.substr(close + 1);
    if (rest.empty())
      return std::string("missing \":port\" after the IPv6 literal");
    if (rest.front() != ':')
      return std::string("expected \":port\" right after ']'");
    in6_addr address{};
    if (host.find('\0') != std::string::npos || inet_pton(AF_INET6, host.c_str(), &address) != 1)
      return std::string("the part in brackets is not an IPv6 address");
    out.host = canonical(AF_INET6, &address);
    out.numeric = true;
    out.family = AF_INET6;
    port_text = rest.substr(1);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return std::string("missing \":port\" (write host:port, e.g. 192.0.2.1:4739)");
    const std::string host(text.substr(0, colon));
    if (host.find(':') != std::string::npos)
      return std::string("an IPv6 address needs brackets, as in [2001:db8::1]:4739");
    if (host.empty())
      return std::string("missing host before \":port\"");
    in_addr address{};
    if (host.find('\0') == std::string::npos && inet_pton(AF_INET, host.c_str(), &address) == 1) {
      out.host = canonical(AF_INET, &address);
      out.numeric = true;
      out.family = AF_INET;
    } else {
      if (auto problem = host_name_problem(host); !problem.empty())
        return problem;
      out.host = host;
      std::transform(out.host.begin(), out.host.end(), out.host.begin(),
                     [](char ch) { return ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch; });
      out.family = AF_UNSPEC;
    }
    port_text = text.substr(colon + 1);
  }

  auto port = parse_port(port_text);
  if (auto* problem = std::get_if<std::string>(&port))
    return std::move(*problem);
  out.port = std::get<uint16_t>(port);
  return out;
}

} // namespace netlens
