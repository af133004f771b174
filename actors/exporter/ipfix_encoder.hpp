// A generic IPFIX (RFC 7011) message writer: templates, data records packed into messages no
// larger than the MTU, template refresh and withdrawal messages. It knows nothing of netlens's
// records (ipfix_layout does) nor of sockets (the collector link sends what it builds).
//
// Sequence numbers and export time are per transport session (one per collector), so the
// messages leave here with both zero and with their count of data records; the sending side
// stamps each copy it sends with ipfix_stamp_header / ipfix_sequence.
//
// Transport rules (RFC 7011 section 8 and 10), which the sender follows:
// - TCP/SCTP: send template_messages() once when the session opens, before any data record. A
//   template then lives until it is withdrawn or the session ends; before an orderly close the
//   exporter may withdraw them (withdraw_all_message(): template id 2, field count 0).
// - UDP: the collector expires templates, so the exporter resends template_messages() at a
//   configurable interval (and may repeat them in front of data). Template Withdrawals MUST NOT
//   be sent over UDP.
// - Template-only messages carry the session's current sequence number (templates do not
//   advance it): stamping one adds 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace netlens {

constexpr uint16_t k_ipfix_version = 10;
constexpr size_t k_ipfix_header_size = 16;
constexpr size_t k_ipfix_set_header_size = 4;
constexpr uint16_t k_ipfix_template_set_id = 2;
constexpr uint16_t k_ipfix_min_template_id = 256;
// A field length of 0xFFFF announces a variable-length field (RFC 7011 section 7).
constexpr uint16_t k_ipfix_varlen = 0xFFFF;
// The message length field is 16 bits.
constexpr size_t k_ipfix_max_message_size = 65535;
// RFC 5612 reserves 32473 for documentation: a placeholder until netlens has a PEN of its own.
constexpr uint32_t k_ipfix_default_enterprise = 32473;

enum class ipfix_status {
  ok,
  record_too_large,   // one data record alone does not fit in a message of mtu bytes
  template_too_large, // one template record alone does not fit
  bad_template,       // id < 256, a duplicate id, no fields, or a zero-length field
  unknown_template,   // a data record for a template never added
  bad_record_length,  // the record's length cannot be one of that template's records
};

const char* to_string(ipfix_status s);

// One field specifier (RFC 7011 section 3.2).
struct ipfix_field {
  uint16_t id = 0;         // the Information Element id, without the enterprise bit
  uint16_t length = 0;     // octets, or k_ipfix_varlen
  bool enterprise = false; // qualified by the settings' enterprise number
};

struct ipfix_template {
  uint16_t id = 0; // >= 256
  std::vector<ipfix_field> fields;
};

// Bytes of the template record on the wire (header, then 4 or 8 bytes per field).
size_t ipfix_template_record_size(const ipfix_template& t);

struct ipfix_settings {
  uint32_t observation_domain_id = 0;
  size_t mtu = 1400; // the largest IPFIX message, header included (capped at 65535)
  uint32_t enterprise_number = k_ipfix_default_enterprise;
};

struct ipfix_message {
  std::vector<uint8_t> bytes; // sequence number and export time still to be stamped
  uint32_t data_records = 0;
  bool templates_only = false;
};

// Writes the sequence number and export time into a built message's header.
void ipfix_stamp_header(ipfix_message& m, uint32_t sequence, uint32_t export_time_s);

// One transport session's sequence counter: the number of data records sent before each
// message, modulo 2^32 (RFC 7011 section 3.1). The sender keeps one per collector.
class ipfix_sequence {
public:
  // Stamps m with the current number and advances it by m's data records; returns the number
  // stamped.
  uint32_t stamp(ipfix_message& m, uint32_t export_time_s);
  uint32_t next() const { return next_; }

private:
  uint32_t next_ = 0;
};

// Big-endian stores for record writers; p must have room for the value.
inline uint8_t* ipfix_put_u8(uint8_t* p, uint8_t v) {
  *p = v;
  return p + 1;
}
inline uint8_t* ipfix_put_u16(uint8_t* p, uint16_t v) {
  v = __builtin_bswap16(v);
  std::memcpy(p, &v, 2);
  return p + 2;
}
inline uint8_t* ipfix_put_u32(uint8_t* p, uint32_t v) {
  v = __builtin_bswap32(v);
  std::memcpy(p, &v, 4);
  return p + 4;
}
inline uint8_t* ipfix_put_u64(uint8_t* p, uint64_t v) {
  v = __builtin_bswap64(v);
  std::memcpy(p, &v, 8);
  return p + 8;
}
inline uint8_t* ipfix_put_bytes(uint8_t* p, const void* data, size_t n) {
  std::memcpy(p, data, n);
  return p + n;
}
// Bytes a variable-length field of n value bytes takes: 1-byte length below 255, else 255 and a
// 2-byte length (RFC 7011 section 7).
constexpr size_t ipfix_varlen_size(size_t n) {
  return n < 255 ? 1 + n : 3 + n;
}
inline uint8_t* ipfix_put_varlen(uint8_t* p, const void* data, size_t n) {
  if (n < 255) {
    p = ipfix_put_u8(p, static_cast<uint8_t>(n));
  } else {
    p = ipfix_put_u8(p, 255);
    p = ipfix_put_u16(p, static_cast<uint16_t>(n));
  }
  return ipfix_put_bytes(p, data, n);
}

// Builds the messages of one exporting process and observation domain. Data records go into
// the message being built until the next one does not fit; then that message is finished and
// a new one begins. Records of one template in a row share one data set. Not thread-safe.
class ipfix_encoder {
public:
  explicit ipfix_encoder(ipfix_settings settings);

  const ipfix_settings& settings() const { return settings_; }
  const std::vector<ipfix_template>& templates() const { return templates_; }

  // Registers a template for add_record and template_messages.
  ipfix_status add_template(ipfix_template t);

  // Room for one data record of exactly length bytes of that template at the end of the
  // message being built: *out points at it and the caller writes all length bytes before the
  // next call. On error *out is null and nothing changed.
  ipfix_status add_record(uint16_t template_id, size_t length, uint8_t** out);
  // The same, copying a record already encoded.
  ipfix_status add_record(uint16_t template_id, const uint8_t* record, size_t length);

  // Finishes the message being built (when it holds a record) and moves every finished
  // message, oldest first, to the end of out.
  void flush(std::vector<ipfix_message>& out);
  // Messages finished and not yet taken by flush (the one being built not counted).
  size_t finished_messages() const { return finished_.size(); }

  // Every template, in as few messages as the MTU allows.
  std::vector<ipfix_message> template_messages() const;
  // Withdrawals of these templates (TCP/SCTP only), in as few messages as fit.
  std::vector<ipfix_message> withdrawal_messages(const std::vector<uint16_t>& template_ids) const;
  // The withdrawal of all data templates (template id 2, field count 0; TCP/SCTP only).
  ipfix_message withdraw_all_message() const;

private:
  struct template_info {
    uint16_t id = 0;
    bool variable = false; // has a variable-length field
    size_t min_length = 0; // the fixed length, or the shortest with every varlen field empty
  };

  const template_info* find(uint16_t id);
  void begin_message();
  void close_set();
  void finish_message();
  ipfix_message templates_only_message() const;

  ipfix_settings settings_;
  std::vector<ipfix_template> templates_;
  std::vector<template_info> info_;
  const template_info* last_ = nullptr; // the template of the previous record

  // The message being built: buf_ holds mtu bytes, used_ of them written.
  std::vector<uint8_t> buf_;
  size_t used_ = 0;
  bool open_ = false;
  uint32_t records_ = 0;
  size_t set_start_ = 0; // offset of the open data set's header
  uint16_t set_id_ = 0;  // 0: no data set open
  std::vector<ipfix_message> finished_;
};

} // namespace netlens
