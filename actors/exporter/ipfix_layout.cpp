#include "actors/exporter/ipfix_layout.hpp"

#include "config/config.hpp"

#include <sys/socket.h>

#include <cstring>

namespace netlens {

// The config loader refuses an export.ipfix.mtu below its own k_ipfix_min_mtu; it must be the
// figure this layout needs, or a valid config could fail at start.
static_assert(k_ipfix_min_mtu == k_netlens_ipfix_min_mtu,
              "config's k_ipfix_min_mtu must equal the layout's smallest workable mtu");

namespace {

// IANA Information Element ids used here.
enum iana_ie : uint16_t {
  octet_delta_count = 1,
  packet_delta_count = 2,
  protocol_identifier = 4,
  source_transport_port = 7,
  source_ipv4_address = 8,
  destination_transport_port = 11,
  destination_ipv4_address = 12,
  source_ipv6_address = 27,
  destination_ipv6_address = 28,
  flow_direction = 61,
  flow_end_reason = 136,
  flow_start_milliseconds = 152,
  flow_end_milliseconds = 153,
  post_nat_source_ipv4_address = 225,
  post_nat_destination_ipv4_address = 226,
  post_napt_source_transport_port = 227,
  post_napt_destination_transport_port = 228,
  post_nat_source_ipv6_address = 281,
  post_nat_destination_ipv6_address = 282,
  transport_octet_delta_count = 401,
};

ipfix_template make_template(bool v6, bool nat, bool device) {
  const uint16_t addr_len = v6 ? 16 : 4;
  ipfix_template t;
  t.id = netlens_template_id(v6, nat, device);
  auto iana = [&t](uint16_t id, uint16_t len) { t.fields.push_back({id, len, false}); };
  auto ent = [&t](netlens_ie id, uint16_t len) {
    t.fields.push_back({static_cast<uint16_t>(id), len, true});
  };
  // The order here is the order encode_direction writes.
  iana(v6 ? source_ipv6_address : source_ipv4_address, addr_len);
  iana(v6 ? destination_ipv6_address : destination_ipv4_address, addr_len);
  iana(source_transport_port, 2);
  iana(destination_transport_port, 2);
  iana(protocol_identifier, 1);
  iana(flow_direction, 1);
  iana(flow_end_reason, 1);
  iana(flow_start_milliseconds, 8);
  iana(flow_end_milliseconds, 8);
  iana(transport_octet_delta_count, 8);
  if (device) {
    iana(octet_delta_count, 8);
    iana(packet_delta_count, 8);
  }
  if (nat) {
    iana(v6 ? post_nat_source_ipv6_address : post_nat_source_ipv4_address, addr_len);
    iana(v6 ? post_nat_destination_ipv6_address : post_nat_destination_ipv4_address, addr_len);
    iana(post_napt_source_transport_port, 2);
    iana(post_napt_destination_transport_port, 2);
  }
  ent(netlens_ie::process_id, 4);
  ent(netlens_ie::netns_inode, 4);
  ent(netlens_ie::tcp_smoothed_rtt_us, 4);
  ent(netlens_ie::tcp_rtt_variance_us, 4);
  ent(netlens_ie::tcp_retransmit_total_count, 4);
  ent(netlens_ie::connection_initiator, 1);
  ent(netlens_ie::transport_octet_total_count, 8);
  ent(netlens_ie::socket_packet_total_count, 8);
  ent(netlens_ie::socket_packet_delta_count, 8);
  ent(netlens_ie::process_name, k_ipfix_varlen);
  ent(netlens_ie::container_id, k_ipfix_varlen);
  return t;
}

// Bytes of the fixed-length fields of a template.
size_t fixed_size(bool v6, bool nat, bool device) {
  const size_t addr = v6 ? 16 : 4;
  size_t n = 2 * addr + 2 + 2 + 1 + 1 + 1 + 8 + 8 + 8 + 5 * 4 + 1 + 3 * 8;
  if (device)
    n += 16;
  if (nat)
    n += 2 * addr + 4;
  return n;
}

uint8_t initiator_of(uint8_t direction) {
  switch (direction) {
  case NL_DIR_OUTGOING:
    return k_initiator_local;
  case NL_DIR_INCOMING:
    return k_initiator_peer;
  default:
    return k_initiator_unknown;
  }
}

// One direction's endpoints: src/dst address (16 bytes, v4 in the first 4) and ports.
struct endpoints_view {
  const uint8_t* saddr;
  const uint8_t* daddr;
  uint16_t sport;
  uint16_t dport;
};

struct record_shape {
  bool v6;
  bool nat;
  bool device;
  uint16_t template_id;
  size_t name_len;
  size_t container_len;
  size_t length;
};

uint8_t* encode_direction(uint8_t* p, const flow_report& r, const record_shape& s,
                          ipfix_flow_direction dir) {
  const nl_conn& c = r.conn;
  const bool sent = dir == ipfix_flow_direction::sent;
  const size_t addr = s.v6 ? 16 : 4;
  endpoints_view e = sent ? endpoints_view{c.saddr, c.daddr, c.sport, c.dport}
                          : endpoints_view{c.daddr, c.saddr, c.dport, c.sport};
  p = ipfix_put_bytes(p, e.saddr, addr);
  p = ipfix_put_bytes(p, e.daddr, addr);
  p = ipfix_put_u16(p, e.sport);
  p = ipfix_put_u16(p, e.dport);
  p = ipfix_put_u8(p, c.protocol);
  p = ipfix_put_u8(p, static_cast<uint8_t>(dir));
  p = ipfix_put_u8(p, static_cast<uint8_t>(r.reason));
  p = ipfix_put_u64(p, r.start_unix_ms);
  p = ipfix_put_u64(p, r.end_unix_ms);
  p = ipfix_put_u64(p, sent ? r.delta.bytes_sent : r.delta.bytes_recv);
  if (s.device) {
    p = ipfix_put_u64(p, sent ? r.device_delta.bytes_out : r.device_delta.bytes_in);
    p = ipfix_put_u64(p, sent ? r.device_delta.packets_out : r.device_delta.packets_in);
  }
  if (s.nat) {
    // r.nat is the reply direction as the wire beyond NAT carries it (peer -> local): the
    // received record's tuple there as is, the sent record's reversed.
    const ct_endpoints& n = r.nat;
    endpoints_view post = sent ? endpoints_view{n.daddr, n.saddr, n.dport, n.sport}
                               : endpoints_view{n.saddr, n.daddr, n.sport, n.dport};
    p = ipfix_put_bytes(p, post.saddr, addr);
    p = ipfix_put_bytes(p, post.daddr, addr);
    p = ipfix_put_u16(p, post.sport);
    p = ipfix_put_u16(p, post.dport);
  }
  p = ipfix_put_u32(p, c.pid);
  p = ipfix_put_u32(p, c.netns);
  p = ipfix_put_u32(p, c.srtt_us);
  p = ipfix_put_u32(p, c.rttvar_us);
  p = ipfix_put_u32(p, sent ? c.retransmits : 0);
  p = ipfix_put_u8(p, initiator_of(c.direction));
  p = ipfix_put_u64(p, sent ? c.bytes_sent : c.bytes_recv);
  p = ipfix_put_u64(p, sent ? c.packets_sent : c.packets_recv);
  p = ipfix_put_u64(p, sent ? r.delta.packets_sent : r.delta.packets_recv);
  p = ipfix_put_varlen(p, c.comm, s.name_len);
  p = ipfix_put_varlen(p, r.container_id.data(), s.container_len);
  return p;
}

} // namespace

std::vector<ipfix_template> netlens_templates() {
  std::vector<ipfix_template> out;
  out.reserve(k_netlens_template_count);
  for (int v6 = 0; v6 < 2; ++v6)
    for (int nat = 0; nat < 2; ++nat)
      for (int device = 0; device < 2; ++device)
        out.push_back(make_template(v6 != 0, nat != 0, device != 0));
  return out;
}

ipfix_status add_netlens_templates(ipfix_encoder& encoder) {
  for (auto& t : netlens_templates()) {
    auto st = encoder.add_template(std::move(t));
    if (st != ipfix_status::ok)
      return st;
  }
  return ipfix_status::ok;
}

ipfix_directions ipfix_directions_of(const flow_report& r) {
  ipfix_directions d;
  if (r.reason == flow_end_reason::none)
    return d;
  d.sent = r.delta.packets_sent != 0 || r.delta.bytes_sent != 0 ||
           (r.has_device && (r.device_delta.packets_out != 0 || r.device_delta.bytes_out != 0));
  d.received = r.delta.packets_recv != 0 || r.delta.bytes_recv != 0 ||
               (r.has_device && (r.device_delta.packets_in != 0 || r.device_delta.bytes_in != 0));
  bool ends = r.reason != flow_end_reason::active_timeout;
  if (ends && !d.sent && !d.received) {
    // Every end of a flow is visible at the collector, even one that moved nothing since the
    // previous report: in the direction of whoever opened it.
    if (r.conn.direction == NL_DIR_INCOMING)
      d.received = true;
    else
      d.sent = true;
  }
  return d;
}

ipfix_status encode_flow_report(ipfix_encoder& encoder, const flow_report& r, uint32_t* records) {
  if (records != nullptr)
    *records = 0;
  ipfix_directions d = ipfix_directions_of(r);
  if (!d.sent && !d.received)
    return ipfix_status::ok;
  record_shape s;
  s.v6 = r.conn.family == AF_INET6;
  s.nat = r.has_nat;
  s.device = r.has_device;
  s.template_id = netlens_template_id(s.v6, s.nat, s.device);
  s.name_len = strnlen(r.conn.comm, k_ipfix_max_process_name);
  s.container_len = r.container_id.size() < k_ipfix_max_container_id ? r.container_id.size()
                                                                     : k_ipfix_max_container_id;
  s.length = fixed_size(s.v6, s.nat, s.device) + ipfix_varlen_size(s.name_len) +
             ipfix_varlen_size(s.container_len);
  // Both directions have the same length and template, so the second cannot fail where the
  // first succeeded: a report goes in whole or not at all.
  uint32_t n = 0;
  for (auto dir : {ipfix_flow_direction::sent, ipfix_flow_direction::received}) {
    if (dir == ipfix_flow_direction::sent ? !d.sent : !d.received)
      continue;
    uint8_t* out = nullptr;
    auto st = encoder.add_record(s.template_id, s.length, &out);
    if (st != ipfix_status::ok)
      return st;
    encode_direction(out, r, s, dir);
    ++n;
  }
  if (records != nullptr)
    *records = n;
  return ipfix_status::ok;
}

} // namespace netlens
