// Joins what the TC classifiers counted per device to the traced connections: a connection of
// namespace N with endpoints s:sp -> d:dp owns, over every device of N, the egress flow
// s:sp -> d:dp (what it sent) and the ingress flow d:dp -> s:sp (what it received). Flows no
// connection owns are reported on their own, as seen only at their device (forwarded traffic,
// a socket the tracer did not see). Pure: no kernel, no CAF.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bpf/tc_attach.hpp"
#include "messages/types.hpp"

namespace netlens {

struct flow_join_result {
  std::vector<std::pair<uint32_t, device_counts>> devices; // by index into the tuples
  std::vector<device_flow> device_only;
};

// The same join a page of connections at a time (a paged answer): the flows are indexed once;
// each page's connections take the flows no earlier page took; unowned() lists what is left.
class flow_joiner {
public:
  explicit flow_joiner(std::vector<tc_flow> flows);
  ~flow_joiner();
  flow_joiner(const flow_joiner&) = delete;
  flow_joiner& operator=(const flow_joiner&) = delete;

  // Device counts by index into tuples; translated as for join_flows.
  std::vector<std::pair<uint32_t, device_counts>>
  join(const std::vector<ct_tuple>& tuples, const std::vector<ct_tuple>& translated = {});
  std::vector<device_flow>
  unowned(const std::function<std::string(uint32_t, uint32_t)>& name_of) const;

private:
  struct index;
  std::vector<tc_flow> flows_;
  std::unique_ptr<index> index_;
};

// name_of(netns, ifindex): the device's name, "" when unknown. translated (same index as
// tuples, or empty): the tuple past NAT, family 0 for none; a translated connection owns the
// flows of both tuples (before NAT at one device, after it at another).
flow_join_result join_flows(const std::vector<ct_tuple>& tuples, const std::vector<tc_flow>& flows,
                            const std::function<std::string(uint32_t, uint32_t)>& name_of,
                            const std::vector<ct_tuple>& translated = {});

} // namespace netlens
