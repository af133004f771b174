// Every atom the actors exchange. CAF 0.17 atoms hold at most 10 characters.
#pragma once

#include <caf/atom.hpp>

namespace netlens {

using init_atom = caf::atom_constant<caf::atom("init")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using purge_atom = caf::atom_constant<caf::atom("purge")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;
using get_conns_atom = caf::atom_constant<caf::atom("getconns")>;
using conns_page_atom = caf::atom_constant<caf::atom("connspage")>;
using expire_atom = caf::atom_constant<caf::atom("expire")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;
using health_atom = caf::atom_constant<caf::atom("health")>;
using lookup_atom = caf::atom_constant<caf::atom("lookup")>;
using claim_atom = caf::atom_constant<caf::atom("claim")>;
using compact_atom = caf::atom_constant<caf::atom("compact")>;
using fault_atom = caf::atom_constant<caf::atom("fault")>;
using guess_atom = caf::atom_constant<caf::atom("guess")>;
using cache_atom = caf::atom_constant<caf::atom("cache")>;
using sync_cache_atom = caf::atom_constant<caf::atom("synccache")>;
using resolve_atom = caf::atom_constant<caf::atom("resolve")>;
using netns_list_atom = caf::atom_constant<caf::atom("netnslist")>;
using traffic_atom = caf::atom_constant<caf::atom("traffic")>;
using reload_atom = caf::atom_constant<caf::atom("reload")>;

} // namespace netlens
