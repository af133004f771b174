// Per-label-set traffic counters for /metrics, fed by every flow_report. The operator picks the
// labels; max_series is a hard budget on distinct label sets, because a counter series can never
// be dropped once scraped (Prometheus counters are monotonic) and peer addresses are unbounded.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "actors/exporter/flow_report.hpp"

namespace netlens {

struct traffic_metrics_stats {
  uint64_t series = 0;       // label sets held, the `other` one included once it exists
  uint64_t series_limit = 0; // max_series: label sets kept apart before folding into `other`
  // Distinct label sets folded into `other`: exact up to traffic_metrics::k_exact_folded_sets,
  // a HyperLogLog estimate (about 1.6% standard error) beyond.
  uint64_t label_sets_folded = 0;
  bool label_sets_folded_estimated = false;
  uint64_t folded_observations = 0; // observations that landed in `other` by folding
  uint64_t observations = 0;
  uint64_t memory_bytes = 0; // approximate heap held by the series and the fold counter
};

class traffic_metrics {
public:
  // The label names an operator may choose from. None is derived from an ephemeral port.
  static const std::vector<std::string_view>& known_labels();
  static std::vector<std::string> default_labels() { return {"protocol", "direction"}; }
  static constexpr uint64_t k_default_max_series = 5000;
  // Distinct folded label sets counted exactly (by 64-bit fingerprint) before the estimate.
  static constexpr size_t k_exact_folded_sets = 1024;

  // labels: already checked by the config loader (export.metrics.labels); an unknown or
  // repeated name is skipped.
  explicit traffic_metrics(const std::vector<std::string>& labels = default_labels(),
                           uint64_t max_series = k_default_max_series);
  ~traffic_metrics();
  traffic_metrics(const traffic_metrics&) = delete;
  traffic_metrics& operator=(const traffic_metrics&) = delete;

  // Adds what the report says moved since that connection's previous report.
  void observe(const flow_report& report);

  // Appends the exposition (text format 0.0.4) of every traffic family.
  void render(std::string& out) const;

  traffic_metrics_stats stats() const;

private:
  enum class label : uint8_t {
    protocol,
    family,
    direction,
    comm,
    container_id,
    netns,
    peer_address,
    local_port,
    peer_port
  };

  struct series {
    std::string labels_text; // `{name="value",...}` escaped, or "" without labels
    uint64_t sent_bytes = 0;
    uint64_t received_bytes = 0;
    uint64_t sent_packets = 0;
    uint64_t received_packets = 0;
    uint64_t retransmits = 0;
    uint64_t opened = 0;
    uint64_t closed = 0;
  };

  // Distinct-count of folded label sets in bounded memory (see traffic_metrics.cpp).
  class folded_set_counter;

  void build_key(const flow_report& report);
  std::string labels_text_of(std::string_view key) const;
  series& series_for_new_key();
  static void add(series& s, const flow_report& report);

  std::vector<label> labels_;
  uint64_t max_series_;
  // The binary label values of the report being observed; reused so a known label set costs
  // one hash lookup and no allocation.
  std::string key_;
  std::unordered_map<std::string, uint32_t> index_; // key -> index into series_, or k_other
  std::vector<series> series_;
  series other_;
  bool other_present_ = false;
  std::unique_ptr<folded_set_counter> folded_;
  uint64_t folded_observations_ = 0;
  uint64_t observations_ = 0;
  uint64_t key_heap_bytes_ = 0; // held by keys and labels_text beyond the objects themselves
};

} // namespace netlens
