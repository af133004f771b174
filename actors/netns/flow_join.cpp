#include "actors/netns/flow_join.hpp"

#include <cstring>
#include <unordered_map>

#include "flow/fnv1a.hpp"

namespace netlens {
namespace {

// A flow's identity without its device: namespace, family, protocol, endpoints as the packets
// carried them, direction.
struct flow_id {
  uint32_t netns = 0;
  uint8_t family = 0;
  uint8_t protocol = 0;
  uint8_t direction = 0;
  uint8_t pad = 0;
  ct_endpoints ends;
  bool operator==(const flow_id& o) const { return std::memcmp(this, &o, sizeof o) == 0; }
};
static_assert(sizeof(flow_id) == 44, "no implicit padding: hashed as bytes");

struct flow_id_hash {
  size_t operator()(const flow_id& f) const { return static_cast<size_t>(fnv1a(&f, sizeof f)); }
};

flow_id id_of(const nl_tc_flow_key& k) {
  flow_id f;
  f.netns = k.netns;
  f.family = static_cast<uint8_t>(k.family);
  f.protocol = k.protocol;
  f.direction = k.direction;
  std::memcpy(f.ends.saddr, k.saddr, 16);
  std::memcpy(f.ends.daddr, k.daddr, 16);
  f.ends.sport = k.sport;
  f.ends.dport = k.dport;
  return f;
}

flow_id id_of(const ct_tuple& t, bool ingress) {
  flow_id f;
  f.netns = t.netns;
  f.family = t.family;
  f.protocol = t.protocol;
  f.direction = ingress ? NL_TC_INGRESS : NL_TC_EGRESS;
  f.ends = ingress ? reversed(t.ends) : t.ends;
  return f;
}

} // namespace

struct flow_joiner::index {
  struct summed {
    uint64_t packets = 0;
    uint64_t bytes = 0;
    std::vector<size_t> flows; // indexes into flows_
    bool owned = false;
  };
  std::unordered_map<flow_id, summed, flow_id_hash> by_id;
};

flow_joiner::flow_joiner(std::vector<tc_flow> flows)
    : flows_(std::move(flows)), index_(std::make_unique<index>()) {
  index_->by_id.reserve(flows_.size());
  for (size_t i = 0; i < flows_.size(); ++i) {
    auto& s = index_->by_id[id_of(flows_[i].key)];
    s.packets += flows_[i].packets;
    s.bytes += flows_[i].bytes;
    s.flows.push_back(i);
  }
}

flow_joiner::~flow_joiner() = default;

std::vector<std::pair<uint32_t, device_counts>>
flow_joiner::join(const std::vector<ct_tuple>& tuples, const std::vector<ct_tuple>& translated) {
  std::vector<std::pair<uint32_t, device_counts>> out;
  auto& by_id = index_->by_id;
  for (size_t i = 0; i < tuples.size() && !by_id.empty(); ++i) {
    device_counts c;
    bool found = false;
    auto take = [&](const ct_tuple& t) {
      auto out_it = by_id.find(id_of(t, false));
      if (out_it != by_id.end() && !out_it->second.owned) {
        c.packets_out += out_it->second.packets;
        c.bytes_out += out_it->second.bytes;
        out_it->second.owned = found = true;
      }
      auto in_it = by_id.find(id_of(t, true));
      if (in_it != by_id.end() && !in_it->second.owned) {
        c.packets_in += in_it->second.packets;
        c.bytes_in += in_it->second.bytes;
        in_it->second.owned = found = true;
      }
    };
    take(tuples[i]);
    if (i < translated.size() && translated[i].family != 0) {
      ct_tuple t = translated[i];
      t.netns = tuples[i].netns;
      take(t);
    }
    if (found)
      out.emplace_back(static_cast<uint32_t>(i), c);
  }
  return out;
}

std::vector<device_flow>
flow_joiner::unowned(const std::function<std::string(uint32_t, uint32_t)>& name_of) const {
  std::vector<device_flow> out;
  for (const auto& [id, s] : index_->by_id) {
    if (s.owned)
      continue;
    for (size_t i : s.flows) {
      const tc_flow& f = flows_[i];
      device_flow d;
      d.netns = f.key.netns;
      d.ifindex = f.key.ifindex;
      d.device = name_of ? name_of(f.key.netns, f.key.ifindex) : std::string();
      d.family = static_cast<uint8_t>(f.key.family);
      d.protocol = f.key.protocol;
      d.ingress = f.key.direction == NL_TC_INGRESS;
      d.ends = id.ends;
      d.packets = f.packets;
      d.bytes = f.bytes;
      out.push_back(std::move(d));
    }
  }
  return out;
}

flow_join_result join_flows(const std::vector<ct_tuple>& tuples, const std::vector<tc_flow>& flows,
                            const std::function<std::string(uint32_t, uint32_t)>& name_of,
                            const std::vector<ct_tuple>& translated) {
  flow_joiner joiner(flows);
  flow_join_result out;
  out.devices = joiner.join(tuples, translated);
  out.device_only = joiner.unowned(name_of);
  return out;
}

} // namespace netlens
