#include "actors/netns/container_id.hpp"

#include <array>

namespace netlens {

namespace {

constexpr size_t k_id_len = 64;

bool is_id(std::string_view s) {
  if (s.size() != k_id_len)
    return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return true;
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// One path component: "<id>" (cgroupfs driver: /docker/<id>, /kubepods/.../pod<uid>/<id>)
// or "<runtime>-<id>.scope" (systemd driver). Runtime monitors ("crio-conmon-<id>.scope",
// "libpod-conmon-<id>.scope") carry the container's id but are not inside the container;
// their prefix leaves more than an id behind, so they do not match.
std::string_view id_of_component(std::string_view c) {
  if (is_id(c))
    return c;
  if (!ends_with(c, ".scope"))
    return {};
  c.remove_suffix(6);
  static constexpr std::array<std::string_view, 5> k_prefixes = {"docker-", "cri-containerd-",
                                                                 "crio-", "libpod-", "containerd-"};
  for (auto p : k_prefixes)
    if (starts_with(c, p) && is_id(c.substr(p.size())))
      return c.substr(p.size());
  return {};
}

// The innermost component of path that names a container: a process deeper than the
// container's own cgroup (systemd inside the container, podman's ".../container") still
// belongs to it.
std::string_view id_of_path(std::string_view path) {
  while (!path.empty()) {
    const size_t slash = path.rfind('/');
    std::string_view last = slash == std::string_view::npos ? path : path.substr(slash + 1);
    if (auto id = id_of_component(last); !id.empty())
      return id;
    if (slash == std::string_view::npos)
      break;
    path = path.substr(0, slash);
  }
  return {};
}

} // namespace

std::string container_id_from_cgroup(std::string_view text) {
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = nl == std::string_view::npos ? text : text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    // "hierarchy-id:controller-list:path"; the path itself may hold ':'.
    const size_t first = line.find(':');
    if (first == std::string_view::npos)
      continue;
    const size_t second = line.find(':', first + 1);
    if (second == std::string_view::npos)
      continue;
    if (auto id = id_of_path(line.substr(second + 1)); !id.empty())
      return std::string(id);
  }
  return {};
}

std::optional<std::string> container_id_of(const proc_scanner& scanner, pid_t pid) {
  auto text = scanner.cgroup(pid);
  if (!text)
    return std::nullopt;
  return container_id_from_cgroup(*text);
}

} // namespace netlens
