// The agent's statistics as Prometheus text exposition format 0.0.4, served on GET /metrics.
// Plain functions of agent_stats: no actor system, so a unit test drives every rule here.
#pragma once

#include <string>
#include <string_view>

#include "flow/prometheus_text.hpp"
#include "messages/types.hpp"

namespace netlens {

// What Prometheus is told the body is; its parsers pick the text format from the version.
inline constexpr const char* k_metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

enum class metric_kind { counter, gauge };

// How one figure of actor_stats::counters is exposed: its metric name, counter or gauge, and
// the power of ten its value is divided by (a figure in milliseconds becomes seconds).
struct figure_metric {
  std::string name;
  metric_kind kind = metric_kind::counter;
  int scale_decimals = 0;
};

// Actors report bare figures without saying what kind they are; the name decides (the rules
// are spelled out in metrics_text.cpp and docs/operations.md). A counter ends in _total.
figure_metric describe_figure(std::string_view actor, std::string_view figure);

// The whole /metrics body: per-actor figures and the supervisor's view of every actor.
std::string render_metrics(const agent_stats& stats);

} // namespace netlens
