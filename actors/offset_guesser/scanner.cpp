#include "actors/offset_guesser/scanner.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>

namespace netlens {
namespace {

template <class T> T load(const std::vector<uint8_t>& bytes, size_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

// How one field is recognised: its width and alignment in the kernel struct, and, for one
// sample, whether the bytes at an offset are what that sample says the field holds. A sample
// that says nothing about the field returns nullopt and does not constrain it.
struct field_rule {
  const char* name;
  __u16 nl_offsets::*slot;
  size_t width;
  size_t align;
  std::function<std::optional<bool>(const scan_sample&, size_t)> matches;
};

std::vector<uint32_t> candidates_of(const field_rule& rule,
                                    const std::vector<scan_sample>& samples) {
  std::vector<const scan_sample*> constraining;
  size_t limit = std::numeric_limits<size_t>::max();
  for (const auto& s : samples) {
    if (s.sock.size() < rule.width)
      continue;
    // A sample constrains a field if it knows its value; whether it does is independent of
    // the offset, so asking at offset 0 tells.
    if (!rule.matches(s, 0).has_value())
      continue;
    constraining.push_back(&s);
    limit = std::min(limit, s.sock.size() - rule.width);
  }
  std::vector<uint32_t> out;
  if (constraining.empty())
    return out;
  limit = std::min<size_t>(limit, std::numeric_limits<uint16_t>::max());
  for (size_t off = 0; off <= limit; off += rule.align) {
    bool all = std::all_of(constraining.begin(), constraining.end(),
                           [&](const scan_sample* s) { return *rule.matches(*s, off); });
    if (all)
      out.push_back(static_cast<uint32_t>(off));
  }
  return out;
}

// Equality with a value of type T that the sample may or may not know.
template <class T, class Get> auto equals(Get get) {
  return [get](const scan_sample& s, size_t off) -> std::optional<bool> {
    std::optional<T> want = get(s);
    if (!want)
      return std::nullopt;
    return load<T>(s.sock, off) == *want;
  };
}

std::optional<bool> equals_in6(const std::optional<in6_bytes>& want, const scan_sample& s,
                               size_t off) {
  if (!want)
    return std::nullopt;
  return std::memcmp(s.sock.data() + off, want->data(), want->size()) == 0;
}

template <class F> std::optional<uint64_t> tcp_value(const scan_sample& s, F f) {
  if (!s.tcp)
    return std::nullopt;
  return f(*s.tcp);
}

std::vector<field_rule> sock_rules() {
  using o = nl_offsets;
  std::vector<field_rule> r;
  r.push_back({"skc_daddr", &o::skc_daddr, 4, 4,
               equals<uint32_t>([](const scan_sample& s) { return s.v4_daddr; })});
  r.push_back({"skc_rcv_saddr", &o::skc_rcv_saddr, 4, 4,
               equals<uint32_t>([](const scan_sample& s) { return s.v4_saddr; })});
  r.push_back({"skc_dport", &o::skc_dport, 2, 2, equals<uint16_t>([](const scan_sample& s) {
                 return std::optional<uint16_t>(htons(s.dport)); // skc_dport is network order
               })});
  r.push_back({"skc_num", &o::skc_num, 2, 2, equals<uint16_t>([](const scan_sample& s) {
                 return std::optional<uint16_t>(s.sport);
               })});
  r.push_back({"skc_family", &o::skc_family, 2, 2, equals<uint16_t>([](const scan_sample& s) {
                 return std::optional<uint16_t>(s.family);
               })});
  r.push_back({"skc_state", &o::skc_state, 1, 1, equals<uint8_t>([](const scan_sample& s) {
                 return std::optional<uint8_t>(s.state);
               })});
  r.push_back({"skc_flags", &o::skc_flags, 8, 8,
               [](const scan_sample& s, size_t off) -> std::optional<bool> {
                 if (!s.flags)
                   return std::nullopt;
                 return (load<uint64_t>(s.sock, off) & s.flags->mask) == s.flags->value;
               }});
  // skc_net is found with net_ns_inum, from the net windows.
  r.push_back({"skc_v6_daddr", &o::skc_v6_daddr, 16, 4,
               [](const scan_sample& s, size_t off) { return equals_in6(s.v6_daddr, s, off); }});
  r.push_back({"skc_v6_rcv_saddr", &o::skc_v6_rcv_saddr, 16, 4,
               [](const scan_sample& s, size_t off) { return equals_in6(s.v6_saddr, s, off); }});
  r.push_back({"skc_cookie", &o::skc_cookie, 8, 8,
               equals<uint64_t>([](const scan_sample& s) { return s.cookie; })});
  return r;
}

std::vector<field_rule> later_rules() {
  using o = nl_offsets;
  std::vector<field_rule> r;
  r.push_back({"sk_protocol", &o::sk_protocol, 2, 2, equals<uint16_t>([](const scan_sample& s) {
                 return std::optional<uint16_t>(s.protocol);
               })});
  r.push_back({"sk_shutdown", &o::sk_shutdown, 1, 1,
               equals<uint8_t>([](const scan_sample& s) { return s.shutdown; })});
  r.push_back(
      {"tcp_bytes_acked", &o::tcp_bytes_acked, 8, 8, equals<uint64_t>([](const scan_sample& s) {
         return tcp_value(s, [](const tcp_info_values& t) { return t.bytes_acked; });
       })});
  r.push_back({"tcp_bytes_received", &o::tcp_bytes_received, 8, 8,
               equals<uint64_t>([](const scan_sample& s) {
                 return tcp_value(s, [](const tcp_info_values& t) { return t.bytes_received; });
               })});
  r.push_back({"tcp_segs_out", &o::tcp_segs_out, 4, 4, equals<uint32_t>([](const scan_sample& s) {
                 auto v = tcp_value(s, [](const tcp_info_values& t) { return t.segs_out; });
                 return v ? std::optional<uint32_t>(static_cast<uint32_t>(*v)) : std::nullopt;
               })});
  r.push_back({"tcp_segs_in", &o::tcp_segs_in, 4, 4, equals<uint32_t>([](const scan_sample& s) {
                 auto v = tcp_value(s, [](const tcp_info_values& t) { return t.segs_in; });
                 return v ? std::optional<uint32_t>(static_cast<uint32_t>(*v)) : std::nullopt;
               })});
  // TCP_INFO reports srtt_us >> 3 and mdev_us >> 2: the shifted-out bits are unknown.
  r.push_back({"tcp_srtt_us", &o::tcp_srtt_us, 4, 4,
               [](const scan_sample& s, size_t off) -> std::optional<bool> {
                 if (!s.tcp)
                   return std::nullopt;
                 return (load<uint32_t>(s.sock, off) >> 3) == s.tcp->rtt_us;
               }});
  r.push_back({"tcp_mdev_us", &o::tcp_mdev_us, 4, 4,
               [](const scan_sample& s, size_t off) -> std::optional<bool> {
                 if (!s.tcp)
                   return std::nullopt;
                 return (load<uint32_t>(s.sock, off) >> 2) == s.tcp->rttvar_us;
               }});
  r.push_back(
      {"tcp_total_retrans", &o::tcp_total_retrans, 4, 4, equals<uint32_t>([](const scan_sample& s) {
         auto v = tcp_value(s, [](const tcp_info_values& t) { return t.total_retrans; });
         return v ? std::optional<uint32_t>(static_cast<uint32_t>(*v)) : std::nullopt;
       })});
  r.push_back({"tcp_snd_una", &o::tcp_snd_una, 4, 4, equals<uint32_t>([](const scan_sample& s) {
                 return s.seq ? std::optional<uint32_t>(s.seq->snd_una) : std::nullopt;
               })});
  r.push_back({"tcp_write_seq", &o::tcp_write_seq, 4, 4, equals<uint32_t>([](const scan_sample& s) {
                 return s.seq ? std::optional<uint32_t>(s.seq->write_seq) : std::nullopt;
               })});
  r.push_back({"tcp_mstamp", &o::tcp_mstamp, 8, 8,
               [](const scan_sample& s, size_t off) -> std::optional<bool> {
                 if (!s.mstamp_range)
                   return std::nullopt;
                 uint64_t v = load<uint64_t>(s.sock, off);
                 return v >= s.mstamp_range->first && v <= s.mstamp_range->second;
               }});
  return r;
}

std::string describe(const field_candidates& f) {
  if (f.offsets.empty())
    return f.field + ": not found";
  std::string s = f.field + ": " + std::to_string(f.offsets.size()) + " candidate offsets (";
  size_t shown = std::min<size_t>(f.offsets.size(), 8);
  for (size_t i = 0; i < shown; ++i)
    s += (i ? ", " : "") + std::to_string(f.offsets[i]);
  if (shown < f.offsets.size())
    s += ", ...";
  return s + ")";
}

// The members of nl_offsets in declaration order: fields and errors are reported in it.
constexpr const char* k_field_order[] = {
    "skc_daddr",          "skc_rcv_saddr", "skc_dport",     "skc_num",      "skc_family",
    "skc_state",          "skc_flags",     "skc_net",       "skc_v6_daddr", "skc_v6_rcv_saddr",
    "skc_cookie",         "net_ns_inum",   "sk_protocol",   "sk_shutdown",  "tcp_bytes_acked",
    "tcp_bytes_received", "tcp_segs_out",  "tcp_segs_in",   "tcp_srtt_us",  "tcp_mdev_us",
    "tcp_total_retrans",  "tcp_snd_una",   "tcp_write_seq", "tcp_mstamp"};
static_assert(sizeof(k_field_order) / sizeof(k_field_order[0]) ==
                  sizeof(nl_offsets) / sizeof(__u16),
              "every member of nl_offsets has a rule");

size_t order_of(const std::string& name) {
  for (size_t i = 0; i < std::size(k_field_order); ++i)
    if (name == k_field_order[i])
      return i;
  return std::size(k_field_order);
}

void settle(scan_outcome& out, const char* name, __u16 nl_offsets::*slot,
            std::vector<uint32_t> offsets) {
  if (offsets.size() == 1)
    out.offsets.*slot = static_cast<__u16>(offsets[0]);
  out.fields.push_back({name, std::move(offsets)});
}

bool looks_like_kernel_pointer(uint64_t v) {
  return (v >> 48) == 0xffff && (v & 7) == 0;
}

} // namespace

std::string scan_outcome::error_text() const {
  std::string s;
  for (const auto& e : errors)
    s += (s.empty() ? "" : "; ") + e;
  return s;
}

std::vector<net_pointer_candidate> net_pointer_candidates(const std::vector<scan_sample>& samples) {
  std::vector<net_pointer_candidate> out;
  if (samples.empty())
    return out;
  size_t limit = std::numeric_limits<size_t>::max();
  for (const auto& s : samples)
    limit = std::min(limit, s.sock.size());
  limit = std::min<size_t>(limit, std::numeric_limits<uint16_t>::max());
  for (size_t off = 0; off + 8 <= limit; off += 8) {
    uint64_t p = load<uint64_t>(samples[0].sock, off);
    if (!looks_like_kernel_pointer(p))
      continue;
    bool same = std::all_of(samples.begin(), samples.end(),
                            [&](const scan_sample& s) { return load<uint64_t>(s.sock, off) == p; });
    if (same)
      out.push_back({static_cast<uint16_t>(off), p});
  }
  return out;
}

scan_outcome scan_offsets(const std::vector<scan_sample>& samples,
                          const std::vector<net_window>& nets, uint32_t netns_inode) {
  scan_outcome out;
  for (const auto& rule : sock_rules())
    settle(out, rule.name, rule.slot, candidates_of(rule, samples));

  // skc_net and net_ns_inum: a pointer candidate is skc_net if the inode appears in what it
  // points at; the inode must then sit at one offset, and only one candidate may qualify.
  std::vector<uint32_t> net_offsets, inum_offsets;
  for (const auto& w : nets) {
    std::vector<uint32_t> hits;
    for (size_t off = 0; off + 4 <= w.bytes.size(); off += 4)
      if (load<uint32_t>(w.bytes, off) == netns_inode)
        hits.push_back(static_cast<uint32_t>(off));
    if (hits.empty())
      continue;
    net_offsets.push_back(w.pointer_offset);
    inum_offsets.insert(inum_offsets.end(), hits.begin(), hits.end());
  }
  std::sort(inum_offsets.begin(), inum_offsets.end());
  inum_offsets.erase(std::unique(inum_offsets.begin(), inum_offsets.end()), inum_offsets.end());
  settle(out, "skc_net", &nl_offsets::skc_net, net_offsets);
  settle(out, "net_ns_inum", &nl_offsets::net_ns_inum, inum_offsets);

  for (const auto& rule : later_rules())
    settle(out, rule.name, rule.slot, candidates_of(rule, samples));
  std::stable_sort(out.fields.begin(), out.fields.end(),
                   [](const field_candidates& a, const field_candidates& b) {
                     return order_of(a.field) < order_of(b.field);
                   });
  for (const auto& f : out.fields)
    if (f.offsets.size() != 1)
      out.errors.push_back(describe(f));
  out.ok = out.errors.empty() && out.fields.size() == std::size(k_field_order);
  return out;
}

} // namespace netlens
