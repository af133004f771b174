// What `/connections?...` and `netlens connections --...` may ask for besides the client id:
// filters, an order and a limit, applied to one answer before it is written. No CAF.
// The client's deltas advance for every connection of the answer, shown or not: a filter
// chooses what is printed, not what the next call's deltas start from.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "messages/types.hpp"

namespace netlens {

enum class conn_state_filter { any, open, closed, failed };
enum class conn_sort { none, bytes, rtt, retransmits, start };

struct connection_query {
  std::optional<uint8_t> protocol;                  // proto=tcp|udp
  std::optional<uint32_t> pid;                      // pid=N
  std::optional<std::string> comm;                  // comm=NAME, the command exactly
  std::optional<std::string> container;             // container=ID, a prefix of the container id
  std::optional<uint16_t> port;                     // port=N, local or peer
  conn_state_filter state = conn_state_filter::any; // state=open|closed|failed
  conn_sort sort = conn_sort::none;                 // sort=bytes|rtt|retransmits|start
  std::optional<size_t> top;                        // top=N, after sorting

  // Any filter besides the order and the limit.
  bool filters() const {
    return protocol || pid || comm || container || port || state != conn_state_filter::any;
  }
};

// The parameters the query knows; client_id is the caller's. Any other name, or a value that
// does not parse, is an error naming the parameter, e.g. "port: 70000 is not a port (1-65535)".
std::variant<connection_query, std::string>
parse_connection_query(const std::map<std::string, std::string>& params);

// A TCP connection that closed without ever being established (refused, timed out, reset in the
// handshake), as far as the tracer's record tells: it never took its established-state base.
bool connection_failed(const connection_view& v);

// Keeps the connections the query selects, in its order, at most top of them. Sorts are
// descending (most bytes sent + received, highest smoothed RTT, most retransmits, most recent
// start), ties kept in the answer's order.
void apply_connection_query(const connection_query& q, std::vector<connection_view>& views);

// The query over a paged answer, a page at a time. Without an order each page is filtered and
// written at once (top counts down across pages); with one, what the query selects is kept, at
// most top of it when a limit is given, and written at the end: an ordered answer without a
// limit holds all it selects.
class paged_selection {
public:
  explicit paged_selection(const connection_query& q) : q_(q) {}
  // Leaves in views what is to be written now.
  void page(std::vector<connection_view>& views);
  // What is left to write once the last page is in.
  std::vector<connection_view>& rest() { return kept_; }

private:
  connection_query q_;
  size_t written_ = 0;
  std::vector<connection_view> kept_;
};

// The same on a whole answer: flows seen only at a device (device_flows) carry no process, so a
// query that filters leaves them out.
void apply_connection_query(const connection_query& q, connections_reply& reply);

} // namespace netlens
