// The listening unix socket of the API and of the console: private to root and, when set, one
// other uid (the socket is 0600 and owned by that uid; its directory 0700, or 0711 so that uid
// gets through without listing it). A socket file left by a process that died is replaced; one
// that still answers is not.
#pragma once

#include <cstdint>
#include <string>
#include <sys/un.h>
#include <variant>

namespace netlens {

struct private_socket_options {
  std::string path;
  uint32_t allowed_uid = 0; // 0: root only
  int backlog = 16;
  std::string busy_message; // the error when another process serves on path ("... on <path>")
};

// The listening fd (the caller owns it), or why not. On error nothing is left behind: no fd,
// and no socket file of ours.
std::variant<int, std::string> listen_private_socket(const private_socket_options& opts);

// Fills a unix socket address; false when path does not fit in sun_path.
bool fill_unix_addr(const std::string& path, sockaddr_un& addr);

// True when something accepts connections on the unix socket at path.
bool unix_socket_answers(const std::string& path);

} // namespace netlens
