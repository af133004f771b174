// The supervisor's start order, checked and told: every child a child depends on (restarted
// with it) starts before it, and the children each one finds through the registry
// (messages/registry.hpp: asked when there, done without while missing or restarting) are
// named, so the order read at start-up shows every arrow between the actors. No CAF.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace netlens {

struct child_arrows {
  std::string name;
  std::vector<std::string> depends_on; // restarted with them, started after them
  std::vector<std::string> finds;      // found through the registry when asked
};

// Why the order cannot be used ("tracer depends on conntrack, which starts after it"), or
// nothing. A child may find one that starts after it, or one this configuration does not run.
std::optional<std::string> check_start_order(const std::vector<child_arrows>& children);

// One line for the log: "conntrack, netns (finds conntrack), tracer (finds conntrack, netns),
// perf_consumer (after tracer), ...".
std::string describe_start_order(const std::vector<child_arrows>& children);

} // namespace netlens
