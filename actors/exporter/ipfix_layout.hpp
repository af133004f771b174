// netlens's IPFIX templates and how one flow_report becomes data records: one uniflow record
// per direction of the connection ("sent": local socket -> peer, "received": peer -> local),
// because common collectors (pmacct, nfdump) show one bytes and one packets counter per record.
// docs/ipfix.md describes every element and which collector column shows it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "actors/exporter/flow_report.hpp"
#include "actors/exporter/ipfix_encoder.hpp"

namespace netlens {

// netlens's enterprise-specific Information Elements (enterprise bit set, the configured PEN).
enum class netlens_ie : uint16_t {
  process_id = 1,                  // unsigned32: conn.pid
  process_name = 2,                // string, variable length: conn.comm
  container_id = 3,                // string, variable length: "" outside containers
  netns_inode = 4,                 // unsigned32
  tcp_smoothed_rtt_us = 5,         // unsigned32: srtt_us
  tcp_rtt_variance_us = 6,         // unsigned32: rttvar_us
  tcp_retransmit_total_count = 7,  // unsigned32: in the sent record, 0 in the received one
  connection_initiator = 8,        // unsigned8: 1 the local socket, 2 the peer, 0 unknown
  transport_octet_total_count = 9, // unsigned64: payload of this direction since it began
  socket_packet_total_count = 10,  // unsigned64: the socket's packets of this direction
  socket_packet_delta_count = 11,  // unsigned64: the same since the previous report
};

// flowDirection (IE 61) values: the direction as the local socket sees it.
enum class ipfix_flow_direction : uint8_t { received = 0, sent = 1 };

// connectionInitiator values.
constexpr uint8_t k_initiator_unknown = 0;
constexpr uint8_t k_initiator_local = 1;
constexpr uint8_t k_initiator_peer = 2;

// The eight templates: 256 + 4 (IPv6) + 2 (NAT fields) + 1 (device counters).
constexpr uint16_t k_netlens_first_template_id = 256;
constexpr uint16_t k_netlens_template_count = 8;
constexpr uint16_t netlens_template_id(bool v6, bool nat, bool device) {
  return static_cast<uint16_t>(k_netlens_first_template_id + (v6 ? 4 : 0) + (nat ? 2 : 0) +
                               (device ? 1 : 0));
}

// Longer variable-length values are cut to these, so a record's size has a bound. comm is at
// most NL_COMM_LEN bytes; the netns actor's container ids are 64 hex digits.
constexpr size_t k_ipfix_max_process_name = NL_COMM_LEN;
constexpr size_t k_ipfix_max_container_id = 64;

// Record sizes, from the element lengths of the largest template (IPv6, NAT, device).
constexpr size_t k_ipfix_max_record_size = 2 * 16           // source and destination IPv6 address
                                           + 2 + 2 + 1      // ports, protocol
                                           + 1 + 1          // flowDirection, flowEndReason
                                           + 8 + 8          // flowStart/EndMilliseconds
                                           + 8              // transportOctetDeltaCount
                                           + 8 + 8          // octetDeltaCount, packetDeltaCount
                                           + 2 * 16 + 2 + 2 // post-NAT addresses and ports
                                           + 5 * 4 + 1 + 3 * 8 // enterprise fixed-length elements
                                           + ipfix_varlen_size(k_ipfix_max_process_name) +
                                           ipfix_varlen_size(k_ipfix_max_container_id);
// The largest template record: 16 IANA field specifiers (4 bytes) and 11 enterprise ones (8).
constexpr size_t k_ipfix_max_template_record_size = 4 + 16 * 4 + 11 * 8;
// The smallest mtu that lets one message hold the largest template or the largest record.
constexpr size_t k_netlens_ipfix_min_mtu =
    k_ipfix_header_size + k_ipfix_set_header_size +
    (k_ipfix_max_record_size > k_ipfix_max_template_record_size ? k_ipfix_max_record_size
                                                                : k_ipfix_max_template_record_size);

// The eight templates, ids 256..263 in order.
std::vector<ipfix_template> netlens_templates();
// Adds them to an encoder (template_too_large when its mtu cannot carry the largest).
ipfix_status add_netlens_templates(ipfix_encoder& encoder);

// Which direction records a report yields. A direction is reported when its socket counters
// (or, with has_device, its device counters) moved; a report that ends the flow with no
// movement yields the initiator's direction (sent when unknown); reason none yields none.
struct ipfix_directions {
  bool sent = false;
  bool received = false;
};
ipfix_directions ipfix_directions_of(const flow_report& r);

// Appends the report's records (0, 1 or 2) to the encoder, whose templates are
// netlens_templates(); *records says how many went in. On error none went in.
ipfix_status encode_flow_report(ipfix_encoder& encoder, const flow_report& r,
                                uint32_t* records = nullptr);

} // namespace netlens
