// How connections, telemetry and statistics look on the wire (JSON), in one place for the
// API, the CLI and the tests.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "messages/types.hpp"

namespace netlens {

std::string address_text(uint16_t family, const uint8_t* addr);
const char* tcp_state_name(uint8_t state);
bool is_intra_host(const nl_conn& c);

// mono_now/real_now convert the kernel's CLOCK_MONOTONIC stamps to wall-clock time.
nlohmann::json connection_to_json(const connection_view& v, uint64_t mono_now, uint64_t real_now);
std::string render_connections(const connections_reply& reply);
std::string render_stats(const agent_stats& stats);

} // namespace netlens
