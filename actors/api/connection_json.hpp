// How connections, telemetry and statistics look on the wire (JSON), in one place for the
// API, the CLI and the tests. Connections are written straight into bounded chunks, never
// into a document tree: 65,536 connections must not cost the host hundreds of megabytes.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "flow/address_text.hpp"
#include "messages/types.hpp"

namespace netlens {

const char* tcp_state_name(uint8_t state);
bool is_intra_host(const nl_conn& c);

// Appends one connection object. mono_now/real_now turn the kernel's CLOCK_MONOTONIC stamps
// into wall-clock nanoseconds.
void append_connection_json(std::string& out, const connection_view& v, uint64_t mono_now,
                            uint64_t real_now);

// One flow seen only at a device (see device_flow), as an object of "device_flows".
void append_device_flow_json(std::string& out, const device_flow& f);

// Writes {"connections":[...],"device_flows":[...],"telemetry":{...}} in chunks of about
// chunk_bytes; stops early if write returns false (the peer went away).
using chunk_writer = std::function<bool(std::string_view)>;
void stream_connections(const connections_reply& reply, const chunk_writer& write,
                        size_t chunk_bytes = 64 * 1024);

// The same document written as the pages of a paged answer arrive: add() each page's
// connections, then finish() with the last page's device flows and telemetry. error: the answer
// broke off (the status line has gone out already): the document ends with
// "error":"..." after what was written, so a reader can tell it is incomplete.
class connections_json_stream {
public:
  explicit connections_json_stream(const chunk_writer& write, size_t chunk_bytes = 64 * 1024);
  // False once the peer went away.
  bool add(const std::vector<connection_view>& views);
  bool finish(const std::vector<device_flow>& flows, const counter_list& telemetry,
              const std::string* error = nullptr);

private:
  bool flush_if_full();
  const chunk_writer& write_;
  size_t chunk_bytes_;
  uint64_t mono_, real_;
  std::string chunk_;
  bool first_ = true;
  bool ok_ = true;
};
std::string render_connections(const connections_reply& reply);

std::string render_stats(const agent_stats& stats);
std::string render_error(const std::string& what);

} // namespace netlens
