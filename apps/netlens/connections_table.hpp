// `netlens connections`: the query it sends and the table it prints, one line per connection,
// like ss.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace netlens {

// The filters, order and limit of `netlens connections`, sent as /connections parameters (the
// agent applies them: see actors/api/connection_query.hpp). Empty: not given.
struct connections_filters {
  std::string proto, pid, comm, container, port, state, sort, top;
};

// "/connections?client_id=...&proto=..." with every value percent-encoded.
std::string connections_target(const std::string& client, const connections_filters& f);

// 1023 -> "1023", 1536 -> "1.5K", 5 MiB -> "5.0M" (powers of 1024, like ls -h).
std::string human_size(uint64_t bytes);

// exact_bytes: sizes as exact numbers (--bytes) instead of human_size.
std::string format_connections_table(const nlohmann::json& body, bool exact_bytes = true);

} // namespace netlens
