#include "actors/exporter/traffic_metrics.hpp"

#include "config/config.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "flow/address_text.hpp"
#include "flow/decimal_text.hpp"
#include "flow/prometheus_text.hpp"

namespace netlens {
namespace {

// index_ value of the one key whose label values are all literally "other" (a comm named
// "other" with only comm chosen): it shares the fold series, or the page would carry one label
// set twice.
constexpr uint32_t k_other = UINT32_MAX;

// Codes the key holds for the enumerated labels, so that two raw values with one label text
// (direction 0 and 7 are both "unknown") make one key.
constexpr uint8_t k_family_v4 = 4;
constexpr uint8_t k_family_v6 = 6;
constexpr uint8_t k_family_unknown = 0;

// A variable-length label value is capped so a key, and thus the memory of max_series series,
// stays bounded whatever the cgroup path holds.
constexpr size_t k_max_text_value = 255;

uint8_t family_code(uint16_t family) {
  return family == AF_INET ? k_family_v4 : family == AF_INET6 ? k_family_v6 : k_family_unknown;
}

uint8_t direction_code(uint8_t direction) {
  bool known = direction == NL_DIR_OUTGOING || direction == NL_DIR_INCOMING;
  return known ? direction : static_cast<uint8_t>(NL_DIR_NONE);
}

// Length of the valid UTF-8 sequence at s[i], 0 when there is none. Prometheus requires label
// values to be UTF-8, and comm is whatever bytes a process set (often cut mid-character at 15).
size_t utf8_sequence(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c >= 0x01 && c < 0x80)
    return 1;
  size_t n = c >= 0xC2 && c <= 0xDF   ? 2
             : c >= 0xE0 && c <= 0xEF ? 3
             : c >= 0xF0 && c <= 0xF4 ? 4
                                      : 0;
  if (n == 0 || i + n > s.size())
    return 0;
  for (size_t k = 1; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF)
      return 0;
  // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
  unsigned char second = b(i + 1);
  if ((c == 0xE0 && second < 0xA0) || (c == 0xED && second > 0x9F) ||
      (c == 0xF0 && second < 0x90) || (c == 0xF4 && second > 0x8F))
    return 0;
  return n;
}

// Appends a length byte and the value as valid UTF-8 (any other byte, and NUL, becomes '?').
// The key holds the label text itself, so two raw values that read alike share one series.
void append_text_value(std::string& key, std::string_view raw) {
  size_t length_at = key.size();
  key.push_back('\0');
  size_t written = 0;
  for (size_t i = 0; i < raw.size();) {
    size_t n = utf8_sequence(raw, i);
    if (written + std::max<size_t>(n, 1) > k_max_text_value)
      break;
    if (n == 0) {
      key.push_back('?');
      ++i;
      ++written;
    } else {
      key.append(raw.data() + i, n);
      i += n;
      written += n;
    }
  }
  key[length_at] = static_cast<char>(written);
}

void append_port(std::string& key, bool present, uint16_t port) {
  key.push_back(present ? '\1' : '\0');
  if (present)
    key.append(reinterpret_cast<const char*>(&port), sizeof port);
}

// Heap bytes a string holds beyond itself (none while its text fits the small-string buffer).
size_t heap_bytes(const std::string& s) {
  const char* self = reinterpret_cast<const char*>(&s);
  bool inside = s.data() >= self && s.data() < self + sizeof s;
  return inside ? 0 : s.capacity() + 1;
}

uint64_t mix64(uint64_t h) { // splitmix64's finalizer: every input bit reaches the top bits
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

} // namespace

// How many distinct label sets were folded, in bounded memory whatever arrives. Each folded key
// is reduced to a 64-bit fingerprint. The first k_exact_folded_sets distinct fingerprints are
// kept in a small open-addressing table, so the count is exact while folding is a nuisance and
// not a flood (an operator sizing max_series wants "12 folded", not "about 12"). Past that the
// table is freed and a HyperLogLog (2^12 one-byte registers, fed from the first fold on) takes
// over: 4 KiB for any number of peers, about 1.6% standard error. The count never goes down,
// as a counter must not: the estimate only replaces it when larger.
class traffic_metrics::folded_set_counter {
public:
  folded_set_counter() : exact_(2 * k_exact_folded_sets, 0), registers_(k_registers, 0) {}

  void add(uint64_t fingerprint) {
    uint64_t h = mix64(fingerprint);
    bool changed = update_register(h);
    if (estimating_) {
      if (changed)
        count_ = std::max(count_, estimate());
      return;
    }
    uint64_t stored = h == 0 ? 1 : h; // 0 marks an empty slot
    size_t mask = exact_.size() - 1;
    for (size_t slot = stored & mask;; slot = (slot + 1) & mask) {
      if (exact_[slot] == stored)
        return;
      if (exact_[slot] == 0) {
        if (count_ < k_exact_folded_sets) {
          exact_[slot] = stored;
          ++count_;
          return;
        }
        break;
      }
    }
    estimating_ = true;
    std::vector<uint64_t>().swap(exact_);
    count_ = std::max(count_ + 1, estimate());
  }

  uint64_t count() const { return count_; }
  bool estimating() const { return estimating_; }
  size_t memory_bytes() const {
    return sizeof(*this) + exact_.capacity() * sizeof(uint64_t) + registers_.capacity();
  }

private:
  static constexpr int k_index_bits = 12;
  static constexpr size_t k_registers = size_t{1} << k_index_bits;

  bool update_register(uint64_t h) {
    size_t index = h >> (64 - k_index_bits);
    uint64_t rest = h << k_index_bits;
    uint8_t rank =
        rest == 0 ? 64 - k_index_bits + 1 : static_cast<uint8_t>(__builtin_clzll(rest) + 1);
    uint8_t& r = registers_[index];
    if (rank <= r)
      return false;
    if (r == 0)
      --zero_registers_;
    inverse_sum_ += std::ldexp(1.0, -rank) - std::ldexp(1.0, -r);
    r = rank;
    return true;
  }

  uint64_t estimate() const {
    double m = static_cast<double>(k_registers);
    double e = 0.7213 / (1.0 + 1.079 / m) * m * m / inverse_sum_;
    if (e <= 2.5 * m && zero_registers_ > 0) // few sets: linear counting is the better guess
      e = m * std::log(m / zero_registers_);
    return static_cast<uint64_t>(std::llround(e));
  }

  std::vector<uint64_t> exact_; // power-of-two size, at most half full
  std::vector<uint8_t> registers_;
  double inverse_sum_ = static_cast<double>(k_registers); // sum of 2^-register
  size_t zero_registers_ = k_registers;
  uint64_t count_ = 0;
  bool estimating_ = false;
};

const std::vector<std::string_view>& traffic_metrics::known_labels() {
  // The config loader's list, which validated export.metrics.labels; its order is enum label's.
  static const std::vector<std::string_view> names(std::begin(k_traffic_metrics_labels),
                                                   std::end(k_traffic_metrics_labels));
  return names;
}

traffic_metrics::traffic_metrics(const std::vector<std::string>& labels, uint64_t max_series)
    : max_series_(std::min<uint64_t>(max_series, k_other - 1)) {
  const auto& known = known_labels();
  for (const auto& name : labels) {
    auto it = std::find(known.begin(), known.end(), name);
    if (it == known.end())
      continue;
    auto l = static_cast<label>(it - known.begin());
    if (std::find(labels_.begin(), labels_.end(), l) == labels_.end())
      labels_.push_back(l);
  }
  for (size_t i = 0; i < labels_.size(); ++i) {
    other_.labels_text += i == 0 ? "{" : ",";
    other_.labels_text += std::string(known[static_cast<size_t>(labels_[i])]) + "=\"other\"";
  }
  if (!labels_.empty())
    other_.labels_text += '}';
}

traffic_metrics::~traffic_metrics() = default;

void traffic_metrics::build_key(const flow_report& report) {
  const nl_conn& c = report.conn;
  key_.clear();
  for (label l : labels_) {
    switch (l) {
    case label::protocol:
      key_.push_back(static_cast<char>(c.protocol));
      break;
    case label::family:
      key_.push_back(static_cast<char>(family_code(c.family)));
      break;
    case label::direction:
      key_.push_back(static_cast<char>(direction_code(c.direction)));
      break;
    case label::comm:
      append_text_value(key_, std::string_view(c.comm, strnlen(c.comm, NL_COMM_LEN)));
      break;
    case label::container_id:
      append_text_value(key_, report.container_id);
      break;
    case label::netns:
      key_.append(reinterpret_cast<const char*>(&c.netns), sizeof c.netns);
      break;
    case label::peer_address: {
      uint8_t code = family_code(c.family);
      key_.push_back(static_cast<char>(code));
      size_t n = code == k_family_v4 ? 4 : code == k_family_v6 ? 16 : 0;
      key_.append(reinterpret_cast<const char*>(c.daddr), n);
      break;
    }
    // Only the server's port says what the traffic was for; a client's is ephemeral and would
    // make every connection a series of its own.
    case label::local_port:
      append_port(key_, c.direction == NL_DIR_INCOMING, c.sport);
      break;
    case label::peer_port:
      append_port(key_, c.direction == NL_DIR_OUTGOING, c.dport);
      break;
    }
  }
}

// Reads the label values back out of a key built by build_key: done once per new series.
std::string traffic_metrics::labels_text_of(std::string_view key) const {
  std::string out;
  size_t pos = 0;
  auto take = [&](size_t n) {
    std::string_view s = key.substr(pos, n);
    pos += n;
    return s;
  };
  auto take_u8 = [&] { return static_cast<uint8_t>(take(1)[0]); };
  auto take_port = [&] {
    std::string text;
    if (take_u8() != 0) {
      uint16_t port = 0;
      std::memcpy(&port, take(sizeof port).data(), sizeof port);
      append_uint(text, port);
    }
    return text;
  };
  const auto& known = known_labels();
  for (size_t i = 0; i < labels_.size(); ++i) {
    label l = labels_[i];
    std::string value;
    switch (l) {
    case label::protocol: {
      uint8_t p = take_u8();
      if (p == IPPROTO_TCP)
        value = "tcp";
      else if (p == IPPROTO_UDP)
        value = "udp";
      else
        append_uint(value, p);
      break;
    }
    case label::family: {
      uint8_t f = take_u8();
      value = f == k_family_v4 ? "ipv4" : f == k_family_v6 ? "ipv6" : "unknown";
      break;
    }
    case label::direction: {
      uint8_t d = take_u8();
      value = d == NL_DIR_OUTGOING ? "outgoing" : d == NL_DIR_INCOMING ? "incoming" : "unknown";
      break;
    }
    case label::comm:
    case label::container_id:
      value = std::string(take(take_u8()));
      break;
    case label::netns: {
      uint32_t inode = 0;
      std::memcpy(&inode, take(sizeof inode).data(), sizeof inode);
      append_uint(value, inode);
      break;
    }
    case label::peer_address: {
      uint8_t f = take_u8();
      if (f != k_family_unknown) {
        uint8_t addr[16] = {};
        std::string_view bytes = take(f == k_family_v4 ? 4 : 16);
        std::memcpy(addr, bytes.data(), bytes.size());
        char buf[INET6_ADDRSTRLEN];
        value = std::string(format_address(f == k_family_v4 ? AF_INET : AF_INET6, addr, buf));
      }
      break;
    }
    case label::local_port:
    case label::peer_port:
      value = take_port();
      break;
    }
    out += i == 0 ? "{" : ",";
    out += known[static_cast<size_t>(l)];
    out += "=\"";
    out += escape_label_value(value);
    out += '"';
  }
  if (!labels_.empty())
    out += '}';
  return out;
}

traffic_metrics::series& traffic_metrics::series_for_new_key() {
  if (series_.size() < max_series_) {
    std::string text = labels_text_of(key_);
    // Past the budget this check is skipped (it costs an allocation per folded report): the
    // all-"other" label set then counts as folded, which it is in effect.
    bool is_other = text == other_.labels_text;
    auto it =
        index_.emplace(key_, is_other ? k_other : static_cast<uint32_t>(series_.size())).first;
    key_heap_bytes_ += heap_bytes(it->first);
    if (is_other) {
      other_present_ = true;
      return other_;
    }
    series_.push_back(series{std::move(text)});
    key_heap_bytes_ += heap_bytes(series_.back().labels_text);
    return series_.back();
  }
  if (!folded_)
    folded_ = std::make_unique<folded_set_counter>();
  folded_->add(std::hash<std::string>{}(key_));
  ++folded_observations_;
  other_present_ = true;
  return other_;
}

void traffic_metrics::add(series& s, const flow_report& report) {
  s.sent_bytes += report.delta.bytes_sent;
  s.received_bytes += report.delta.bytes_recv;
  s.sent_packets += report.delta.packets_sent;
  s.received_packets += report.delta.packets_recv;
  s.retransmits += report.delta.retransmits;
  if (report.first_report)
    ++s.opened;
  if (report.reason == flow_end_reason::end_of_flow ||
      report.reason == flow_end_reason::idle_timeout)
    ++s.closed;
}

void traffic_metrics::observe(const flow_report& report) {
  ++observations_;
  build_key(report);
  auto it = index_.find(key_);
  if (it == index_.end())
    add(series_for_new_key(), report);
  else
    add(it->second == k_other ? other_ : series_[it->second], report);
}

void traffic_metrics::render(std::string& out) const {
  struct counter_family {
    const char* name;
    const char* help;
    uint64_t series::*value;
  };
  static const counter_family families[] = {
      {"netlens_traffic_sent_bytes_total",
       "Transport payload bytes sent (TCP or UDP payload, no IP or transport headers)",
       &series::sent_bytes},
      {"netlens_traffic_received_bytes_total",
       "Transport payload bytes received (TCP or UDP payload, no IP or transport headers)",
       &series::received_bytes},
      {"netlens_traffic_sent_packets_total", "Packets sent: TCP segments or UDP datagrams",
       &series::sent_packets},
      {"netlens_traffic_received_packets_total", "Packets received: TCP segments or UDP datagrams",
       &series::received_packets},
      {"netlens_traffic_retransmits_total", "TCP segments retransmitted", &series::retransmits},
      {"netlens_traffic_connections_opened_total",
       "Connections seen for the first time (those open when the agent started included)",
       &series::opened},
      {"netlens_traffic_connections_closed_total",
       "Connections ended: the socket closed, or a UDP flow went idle", &series::closed},
  };
  auto sample = [&out](const char* name, const std::string& labels, uint64_t value) {
    out += name;
    out += labels;
    out += ' ';
    append_uint(out, value);
    out += '\n';
  };
  auto header = [&out](const char* name, const char* help, const char* type) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
  };
  for (const auto& f : families) {
    header(f.name, f.help, "counter");
    for (const auto& s : series_)
      sample(f.name, s.labels_text, s.*f.value);
    if (other_present_)
      sample(f.name, other_.labels_text, other_.*f.value);
  }
  traffic_metrics_stats st = stats();
  static const std::string no_labels;
  header("netlens_traffic_series",
         "Label sets the netlens_traffic counters hold, the folded one (all labels \"other\") "
         "included",
         "gauge");
  sample("netlens_traffic_series", no_labels, st.series);
  header("netlens_traffic_series_limit",
         "Label sets the netlens_traffic counters keep apart; new ones past it are folded into "
         "the one whose labels are all \"other\"",
         "gauge");
  sample("netlens_traffic_series_limit", no_labels, st.series_limit);
  header("netlens_traffic_label_sets_folded_total",
         "Distinct label sets folded into the \"other\" series: exact up to 1024, estimated "
         "beyond (about 1.6% error)",
         "counter");
  sample("netlens_traffic_label_sets_folded_total", no_labels, st.label_sets_folded);
  header("netlens_traffic_folded_observations_total",
         "Connection reports whose traffic was added to the \"other\" series because the label "
         "set budget was full",
         "counter");
  sample("netlens_traffic_folded_observations_total", no_labels, st.folded_observations);
}

traffic_metrics_stats traffic_metrics::stats() const {
  traffic_metrics_stats st;
  st.series = series_.size() + (other_present_ ? 1 : 0);
  st.series_limit = max_series_;
  st.label_sets_folded = folded_ ? folded_->count() : 0;
  st.label_sets_folded_estimated = folded_ && folded_->estimating();
  st.folded_observations = folded_observations_;
  st.observations = observations_;
  // The node size of unordered_map is the library's business: a pair, a next pointer and the
  // cached hash is what libstdc++ allocates.
  constexpr size_t node_bytes = sizeof(std::pair<const std::string, uint32_t>) + 2 * sizeof(void*);
  st.memory_bytes = series_.capacity() * sizeof(series) + index_.size() * node_bytes +
                    index_.bucket_count() * sizeof(void*) + key_heap_bytes_ + heap_bytes(key_) +
                    heap_bytes(other_.labels_text) + (folded_ ? folded_->memory_bytes() : 0);
  return st;
}

} // namespace netlens
