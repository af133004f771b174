#include "actors/exporter/ipfix_encoder.hpp"

#include <algorithm>
#include <utility>

namespace netlens {

namespace {

size_t field_specifier_size(const ipfix_field& f) {
  return f.enterprise ? 8 : 4;
}

void put_header(uint8_t* p, size_t length, uint32_t domain) {
  p = ipfix_put_u16(p, k_ipfix_version);
  p = ipfix_put_u16(p, static_cast<uint16_t>(length));
  p = ipfix_put_u32(p, 0); // export time: stamped by the sender
  p = ipfix_put_u32(p, 0); // sequence number: likewise
  ipfix_put_u32(p, domain);
}

} // namespace

const char* to_string(ipfix_status s) {
  switch (s) {
  case ipfix_status::ok:
    return "ok";
  case ipfix_status::record_too_large:
    return "record too large for the mtu";
  case ipfix_status::template_too_large:
    return "template too large for the mtu";
  case ipfix_status::bad_template:
    return "bad template";
  case ipfix_status::unknown_template:
    return "unknown template";
  case ipfix_status::bad_record_length:
    return "record length does not match its template";
  }
  return "unknown status";
}

size_t ipfix_template_record_size(const ipfix_template& t) {
  size_t n = 4;
  for (const auto& f : t.fields)
    n += field_specifier_size(f);
  return n;
}

void ipfix_stamp_header(ipfix_message& m, uint32_t sequence, uint32_t export_time_s) {
  if (m.bytes.size() < k_ipfix_header_size)
    return;
  ipfix_put_u32(m.bytes.data() + 4, export_time_s);
  ipfix_put_u32(m.bytes.data() + 8, sequence);
}

uint32_t ipfix_sequence::stamp(ipfix_message& m, uint32_t export_time_s) {
  uint32_t stamped = next_;
  ipfix_stamp_header(m, stamped, export_time_s);
  next_ += m.data_records; // unsigned: wraps modulo 2^32 as RFC 7011 wants
  return stamped;
}

ipfix_encoder::ipfix_encoder(ipfix_settings settings) : settings_(settings) {
  // The length field cannot say more; an mtu below one header makes every record too large,
  // which add_record reports, so nothing here needs to refuse it.
  settings_.mtu = std::min(settings_.mtu, k_ipfix_max_message_size);
}

ipfix_status ipfix_encoder::add_template(ipfix_template t) {
  if (t.id < k_ipfix_min_template_id || t.fields.empty() || t.fields.size() > 0xFFFF)
    return ipfix_status::bad_template;
  for (const auto& f : t.fields)
    if (f.length == 0 || f.id > 0x7FFF) // the top bit is the enterprise bit
      return ipfix_status::bad_template;
  for (const auto& i : info_)
    if (i.id == t.id)
      return ipfix_status::bad_template;
  if (k_ipfix_header_size + k_ipfix_set_header_size + ipfix_template_record_size(t) > settings_.mtu)
    return ipfix_status::template_too_large;
  template_info info;
  info.id = t.id;
  for (const auto& f : t.fields) {
    if (f.length == k_ipfix_varlen) {
      info.variable = true;
      info.min_length += 1;
    } else {
      info.min_length += f.length;
    }
  }
  info_.push_back(info);
  templates_.push_back(std::move(t));
  last_ = nullptr; // info_ may have moved
  return ipfix_status::ok;
}

const ipfix_encoder::template_info* ipfix_encoder::find(uint16_t id) {
  if (last_ != nullptr && last_->id == id)
    return last_;
  for (const auto& i : info_)
    if (i.id == id)
      return last_ = &i;
  return nullptr;
}

void ipfix_encoder::begin_message() {
  // A fresh buffer per message: the finished one moves out with its bytes.
  buf_.resize(settings_.mtu);
  used_ = k_ipfix_header_size;
  open_ = true;
  records_ = 0;
  set_id_ = 0;
}

void ipfix_encoder::close_set() {
  if (set_id_ == 0)
    return;
  ipfix_put_u16(buf_.data() + set_start_ + 2, static_cast<uint16_t>(used_ - set_start_));
  set_id_ = 0;
}

void ipfix_encoder::finish_message() {
  if (!open_)
    return;
  close_set();
  put_header(buf_.data(), used_, settings_.observation_domain_id);
  buf_.resize(used_);
  ipfix_message m;
  m.bytes = std::move(buf_);
  m.data_records = records_;
  finished_.push_back(std::move(m));
  buf_ = std::vector<uint8_t>();
  open_ = false;
}

ipfix_status ipfix_encoder::add_record(uint16_t template_id, size_t length, uint8_t** out) {
  *out = nullptr;
  const template_info* t = find(template_id);
  if (t == nullptr)
    return ipfix_status::unknown_template;
  if (t->variable ? length < t->min_length : length != t->min_length)
    return ipfix_status::bad_record_length;
  if (k_ipfix_header_size + k_ipfix_set_header_size + length > settings_.mtu)
    return ipfix_status::record_too_large;
  bool same_set = open_ && set_id_ == template_id;
  size_t need = length + (same_set ? 0 : k_ipfix_set_header_size);
  if (open_ && used_ + need > settings_.mtu) {
    finish_message();
    same_set = false;
  }
  if (!open_)
    begin_message();
  if (!same_set) {
    close_set();
    set_start_ = used_;
    ipfix_put_u16(buf_.data() + used_, template_id);
    used_ += k_ipfix_set_header_size; // the length is written when the set closes
    set_id_ = template_id;
  }
  *out = buf_.data() + used_;
  used_ += length;
  ++records_;
  return ipfix_status::ok;
}

ipfix_status ipfix_encoder::add_record(uint16_t template_id, const uint8_t* record, size_t length) {
  uint8_t* out = nullptr;
  auto st = add_record(template_id, length, &out);
  if (st == ipfix_status::ok)
    std::memcpy(out, record, length);
  return st;
}

void ipfix_encoder::flush(std::vector<ipfix_message>& out) {
  if (open_ && records_ > 0)
    finish_message();
  for (auto& m : finished_)
    out.push_back(std::move(m));
  finished_.clear();
}

ipfix_message ipfix_encoder::templates_only_message() const {
  ipfix_message m;
  m.templates_only = true;
  m.bytes.reserve(settings_.mtu);
  m.bytes.resize(k_ipfix_header_size + k_ipfix_set_header_size);
  ipfix_put_u16(m.bytes.data() + k_ipfix_header_size, k_ipfix_template_set_id);
  return m;
}

namespace {

// Closes a template set that starts right after the header, and the header.
void finish_template_message(ipfix_message& m, uint32_t domain) {
  ipfix_put_u16(m.bytes.data() + k_ipfix_header_size + 2,
                static_cast<uint16_t>(m.bytes.size() - k_ipfix_header_size));
  put_header(m.bytes.data(), m.bytes.size(), domain);
}

} // namespace

std::vector<ipfix_message> ipfix_encoder::template_messages() const {
  std::vector<ipfix_message> out;
  ipfix_message m = templates_only_message();
  size_t records = 0;
  for (const auto& t : templates_) {
    size_t size = ipfix_template_record_size(t);
    if (records > 0 && m.bytes.size() + size > settings_.mtu) {
      finish_template_message(m, settings_.observation_domain_id);
      out.push_back(std::move(m));
      m = templates_only_message();
      records = 0;
    }
    size_t at = m.bytes.size();
    m.bytes.resize(at + size);
    uint8_t* p = m.bytes.data() + at;
    p = ipfix_put_u16(p, t.id);
    p = ipfix_put_u16(p, static_cast<uint16_t>(t.fields.size()));
    for (const auto& f : t.fields) {
      p = ipfix_put_u16(p, static_cast<uint16_t>(f.enterprise ? f.id | 0x8000 : f.id));
      p = ipfix_put_u16(p, f.length);
      if (f.enterprise)
        p = ipfix_put_u32(p, settings_.enterprise_number);
    }
    ++records;
  }
  if (records > 0) {
    finish_template_message(m, settings_.observation_domain_id);
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<ipfix_message>
ipfix_encoder::withdrawal_messages(const std::vector<uint16_t>& template_ids) const {
  std::vector<ipfix_message> out;
  ipfix_message m = templates_only_message();
  size_t records = 0;
  for (uint16_t id : template_ids) {
    if (records > 0 && m.bytes.size() + 4 > settings_.mtu) {
      finish_template_message(m, settings_.observation_domain_id);
      out.push_back(std::move(m));
      m = templates_only_message();
      records = 0;
    }
    size_t at = m.bytes.size();
    m.bytes.resize(at + 4);
    ipfix_put_u16(ipfix_put_u16(m.bytes.data() + at, id), 0); // field count 0: withdrawn
    ++records;
  }
  if (records > 0) {
    finish_template_message(m, settings_.observation_domain_id);
    out.push_back(std::move(m));
  }
  return out;
}

ipfix_message ipfix_encoder::withdraw_all_message() const {
  auto all = withdrawal_messages({k_ipfix_template_set_id});
  return std::move(all.front());
}

} // namespace netlens
