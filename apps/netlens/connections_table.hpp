// The `netlens connections` table: one line per connection, like ss.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace netlens {

std::string format_connections_table(const nlohmann::json& body);

} // namespace netlens
