// What the console prints: the tables and lines of each command, from the values the actors
// answer with. Plain functions of their input, so a test checks the exact text.
#pragma once

#include <string>
#include <vector>

#include "actors/console/command_parser.hpp"
#include "messages/types.hpp"

namespace netlens {

// "12.3s", "4m05s", "2h03m", "3d04h".
std::string format_uptime(uint64_t ms);

// One row per actor; an actor that did not answer in time shows as "not answering".
std::string format_actors_table(const agent_stats& stats);

// One actor's own view: its runtime figures, then its counters. Error text (and false) when
// no actor has that name.
bool format_inspect(const agent_stats& stats, const std::string& name, std::string& out);

bool connection_matches(const connection_view& c, const conn_filter& f);

// The connections passing the filter, as a table, and a last line counting them.
std::string format_connections(const connections_reply& reply, const conn_filter& f);

std::string format_cache(const conntrack_listing& listing);

// "phase stop: done in 1.2 ms" (+ who did not answer).
std::string format_phase(const shutdown_phase_report& report);

// One frame of `top`: the actors with their message rates, then the counters that moved
// since the previous frame, per second (previous may be empty: the first frame).
std::string format_top(const agent_stats& now, const agent_stats& previous, double seconds,
                       const std::string& clock_text);

// "ip:port" or "[ip6]:port".
std::string format_endpoint(uint16_t family, const uint8_t* addr, uint16_t port);

} // namespace netlens
