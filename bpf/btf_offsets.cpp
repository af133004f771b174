#include "bpf/btf_offsets.hpp"
#include "flow/errno_text.hpp"

#include <cerrno>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>

#include <bpf/btf.h>

namespace netlens {
namespace {

using btf_ptr = std::unique_ptr<btf, void (*)(btf*)>;

btf_ptr open_btf(const std::string& path, std::string& error) {
  btf* b = btf__parse(path.c_str(), nullptr);
  if (!b) {
    error = path + ": cannot read BTF: " + errno_text();
    return btf_ptr(nullptr, btf__free);
  }
  return btf_ptr(b, btf__free);
}

// The bit offset of `name` in the struct or union `type_id`, looking inside anonymous members.
std::optional<uint64_t> find_member(const btf* b, uint32_t type_id, const std::string& name,
                                    uint32_t& member_type) {
  const btf_type* t = btf__type_by_id(b, btf__resolve_type(b, type_id));
  if (!t || !(btf_is_struct(t) || btf_is_union(t)))
    return std::nullopt;
  const btf_member* m = btf_members(t);
  for (uint16_t i = 0; i < btf_vlen(t); ++i, ++m) {
    const char* member_name = btf__name_by_offset(b, m->name_off);
    uint64_t bits = btf_member_bit_offset(t, i);
    if (member_name && *member_name) {
      if (name == member_name) {
        member_type = m->type;
        return bits;
      }
      continue;
    }
    uint32_t inner_type = 0;
    if (auto inner = find_member(b, m->type, name, inner_type)) {
      member_type = inner_type;
      return bits + *inner;
    }
  }
  return std::nullopt;
}

std::variant<unsigned, std::string> member_offset(const btf* b, const std::string& type_name,
                                                  const std::string& path) {
  int32_t id = btf__find_by_name_kind(b, type_name.c_str(), BTF_KIND_STRUCT);
  if (id < 0)
    return "BTF has no struct " + type_name;
  uint32_t type = static_cast<uint32_t>(id);
  uint64_t bits = 0;
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    uint32_t next = 0;
    auto found = find_member(b, type, part, next);
    if (!found)
      return "struct " + type_name + " has no member " + path + " (" + part + " not found)";
    bits += *found;
    type = next;
    if (dot == std::string::npos)
      break;
    start = dot + 1;
  }
  if (bits % 8 != 0)
    return type_name + "." + path + " is a bit field";
  return static_cast<unsigned>(bits / 8);
}

} // namespace

std::variant<unsigned, std::string> btf_member_offset(const std::string& type_name,
                                                      const std::string& path,
                                                      const std::string& btf_path) {
  std::string error;
  btf_ptr b = open_btf(btf_path, error);
  if (!b)
    return error;
  return member_offset(b.get(), type_name, path);
}

std::variant<nl_offsets, std::string> offsets_from_btf(const std::string& btf_path) {
  std::string error;
  btf_ptr b = open_btf(btf_path, error);
  if (!b)
    return error;
  nl_offsets o{};
  struct field {
    __u16* out;
    const char* type;
    const char* path;
  } fields[] = {
      {&o.skc_daddr, "sock", "__sk_common.skc_daddr"},
      {&o.skc_rcv_saddr, "sock", "__sk_common.skc_rcv_saddr"},
      {&o.skc_dport, "sock", "__sk_common.skc_dport"},
      {&o.skc_num, "sock", "__sk_common.skc_num"},
      {&o.skc_family, "sock", "__sk_common.skc_family"},
      {&o.skc_state, "sock", "__sk_common.skc_state"},
      {&o.skc_flags, "sock", "__sk_common.skc_flags"},
      {&o.skc_net, "sock", "__sk_common.skc_net"},
      {&o.skc_v6_daddr, "sock", "__sk_common.skc_v6_daddr"},
      {&o.skc_v6_rcv_saddr, "sock", "__sk_common.skc_v6_rcv_saddr"},
      {&o.skc_cookie, "sock", "__sk_common.skc_cookie"},
      {&o.net_ns_inum, "net", "ns.inum"},
      {&o.sk_protocol, "sock", "sk_protocol"},
      {&o.sk_shutdown, "sock", "sk_shutdown"},
      {&o.tcp_bytes_acked, "tcp_sock", "bytes_acked"},
      {&o.tcp_bytes_received, "tcp_sock", "bytes_received"},
      {&o.tcp_segs_out, "tcp_sock", "segs_out"},
      {&o.tcp_segs_in, "tcp_sock", "segs_in"},
      {&o.tcp_srtt_us, "tcp_sock", "srtt_us"},
      {&o.tcp_mdev_us, "tcp_sock", "mdev_us"},
      {&o.tcp_total_retrans, "tcp_sock", "total_retrans"},
      {&o.tcp_snd_una, "tcp_sock", "snd_una"},
      {&o.tcp_write_seq, "tcp_sock", "write_seq"},
      {&o.tcp_mstamp, "tcp_sock", "tcp_mstamp"},
  };
  static_assert(sizeof(nl_offsets) == std::size(fields) * sizeof(__u16),
                "every member of nl_offsets has a BTF path above");
  for (auto& f : fields) {
    auto off = member_offset(b.get(), f.type, f.path);
    if (auto* e = std::get_if<std::string>(&off))
      return *e;
    *f.out = static_cast<__u16>(std::get<unsigned>(off));
  }
  return o;
}

} // namespace netlens
