// The kernel side of the connection assembler, as two small interfaces: the tracer's map of
// active connections, and the kernel's tables of live TCP sockets. The loaded tracer and the
// sock_diag reader implement them; a unit test fakes them, so the assembler, idle expiry and
// reconciliation run without root or a kernel.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "bpf/netlens_records.h"

namespace netlens {

// Where a read of the active map stands. The token is the table's own (a hash bucket in the
// kernel): entries deleted meanwhile do not upset it, entries added to buckets already read are
// not seen (as with any read that is not atomic).
struct active_cursor {
  uint64_t token = 0;
  bool started = false;
  bool done = false;
  // Bring the live TCP counters into the table before the first page. Off for reads that only
  // look at UDP flows and closing states, or count entries.
  bool refresh = true;
};

class active_table {
public:
  virtual ~active_table() = default;
  // Appends the entries of the next buckets to out, up to max (more only when one bucket holds
  // more); cursor.done once the end is reached (that read may still append entries).
  virtual void read_active_page(active_cursor& cursor, std::vector<nl_conn>& out,
                                uint32_t max) const = 0;
  // Removes one active connection by its sock_id; false if it was not there (it closed
  // meanwhile, and its record is on the way).
  virtual bool remove_active(uint64_t sock_id) = 0;
};

// Replaces out with every entry of the table, with live counters. The first page is small and
// each full one doubles the next, up to max_page: a few entries cost a few kilobytes, 65,536
// cost ~20 reads.
void read_whole_table(const active_table& table, std::vector<nl_conn>& out,
                      uint32_t max_page = 4096);

using live_cookies = std::variant<std::unordered_set<uint64_t>, std::string>;

class live_sockets {
public:
  virtual ~live_sockets() = default;
  // The cookies of every TCP socket of network namespace netns, reached as the implementation
  // can (in_ns: the table's entries there, whose processes may lead to it). A string says why
  // the table could not be read.
  virtual live_cookies tcp_cookies(uint32_t netns, const std::vector<const nl_conn*>& in_ns) = 0;
};

// The kernel's: its own namespace directly, another through /proc/<pid>/ns/net of a process of
// one of the entries there (the namespace's inode checked), or when none of them is in it any
// more, wherever find_netns reaches it. A namespace nothing reaches is searched for again only
// after research_after: a search reads all of /proc.
class kernel_live_sockets : public live_sockets {
public:
  explicit kernel_live_sockets(
      std::chrono::steady_clock::duration research_after = std::chrono::seconds(30));
  live_cookies tcp_cookies(uint32_t netns, const std::vector<const nl_conn*>& in_ns) override;

private:
  uint32_t own_netns_;
  std::chrono::steady_clock::duration research_after_;
  // Namespaces nothing reached, with when they may be searched for again, and why not.
  std::unordered_map<uint32_t, std::pair<std::chrono::steady_clock::time_point, std::string>>
      unreachable_;
};

} // namespace netlens
