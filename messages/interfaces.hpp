// The typed interface of every actor: who answers what. Reading this file is reading the
// whole conversation of the agent.
#pragma once

#include <string>

#include <caf/replies_to.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "messages/atoms.hpp"
#include "messages/types.hpp"

namespace netlens {

// What the supervisor asks of every child: become ready, stop (no new work, drain, join
// threads), purge (release kernel objects and caches), report statistics. Exit is CAF's own
// exit message. (The fault switch of test builds is no part of it: actors/common/self_interface.)
using lifecycle_actor = caf::typed_actor<caf::replies_to<init_atom>::with<caf::ok_atom>,
                                         caf::replies_to<stop_atom>::with<caf::ok_atom>,
                                         caf::replies_to<purge_atom>::with<caf::ok_atom>,
                                         caf::replies_to<stats_atom>::with<actor_stats>>;

// Owns the BPF object and links, the active map, the closed buffer and per-client state.
using tracer_actor = lifecycle_actor::extend<
    caf::replies_to<get_conns_atom, std::string>::with<connections_reply>,
    // get_conns, client, max_closed: at most max_closed closed connections in this answer, the
    // rest in the next ones (the exporter asks so, to keep each answer small on a busy host)
    caf::replies_to<get_conns_atom, std::string, uint32_t>::with<connections_reply>,
    // conns_page, client, listing: the next page of a paged answer (listing 0 begins one)
    caf::replies_to<conns_page_atom, std::string, uint64_t>::with<connections_reply>,
    // conns_page, client, listing, max_closed: the same; a listing begun so sets aside at most
    // max_closed closed connections, the rest wait for the next (the exporter asks so)
    caf::replies_to<conns_page_atom, std::string, uint64_t, uint32_t>::with<connections_reply>,
    caf::reacts_to<closed_batch>, caf::reacts_to<expire_atom>>;

// Owns the ring / perf buffer reader and its poll thread, handed the tracer's closed buffer when
// it is spawned; sends closed_batch to the tracer, and nothing else: it only pushes.
//   flush, ticket: read everything closed so far and push it with closed_batch::flushed =
//   ticket (the tracer asks before each connections answer, so no closed connection waits for
//   its batch). Never answered, never waited for in a handler.
using perf_consumer_actor = lifecycle_actor::extend<caf::reacts_to<flush_atom, uint64_t>>;

// Registry name of the perf consumer running now: the tracer asks it to flush.
constexpr caf::atom_value k_perf_consumer_registry_name = caf::atom("consumer");

// One timer: each interval sends expire to the tracer; each compact interval sends compact
// to conntrack.
// reload, interval_ms, compact_interval_ms: a configuration reload's intervals, used from the
// next tick of each (a tick already waiting keeps the old one).
using compact_ticker_actor =
    lifecycle_actor::extend<caf::reacts_to<reload_atom, uint32_t, uint32_t>>;

// Owns the NAT translation cache and one netlink consumer per network namespace.
//   lookup: translations of active connections (the cache entry stays);
//   claim:  translations of closed connections, which then leave the cache;
//   either waits (1 s at most) for a namespace's first dump when it is not in yet, and for its
//   consumer to read its events dry when a tuple is not in the cache (claim_waitlist);
//   lookup of nothing: answered once every claim sent before it is;
//   compact: drop orphans past their TTL.
using conntrack_actor = lifecycle_actor::extend<
    caf::replies_to<lookup_atom, nat_lookup_request>::with<nat_lookup_reply>,
    caf::replies_to<claim_atom, nat_lookup_request>::with<nat_lookup_reply>,
    caf::reacts_to<compact_atom>,
    // cache, N: the first N entries, most recently used first (the console's `cache`)
    caf::replies_to<cache_atom, uint32_t>::with<conntrack_listing>,
    // the netns actor's namespaces: run (or stop) a consumer in each
    caf::reacts_to<netns_joined>, caf::reacts_to<netns_left>,
    // reload, rate limit: a configuration reload's conntrack.rate_limit, for every consumer
    caf::reacts_to<reload_atom, int64_t>>;

// The conntrack actor is found through CAF's registry under this name, so the tracer and the
// ticker reach whichever instance runs now (it may have been restarted) without restarting
// with it.
constexpr caf::atom_value k_conntrack_registry_name = caf::atom("conntrack");

// The HTTP API on a unix socket; its server threads only send requests to the supervisor.
//   reload, metrics.address, metrics.port: a configuration reload moves the metrics listener
//   (bound anew first; when that fails the old one stays and the error is logged).
using api_actor = lifecycle_actor::extend<caf::reacts_to<reload_atom, std::string, uint32_t>>;

// Owns the guessing BPF object and its loopback connections; finds the struct offsets the
// prebuilt tracer reads. guess: the cached result when there is one, else up to max_tries
// guesses.
using offset_guesser_actor =
    lifecycle_actor::extend<caf::replies_to<guess_atom>::with<guessed_offsets>>;

// The introspection console on a unix socket; its session threads only send requests.
//   shutdown, listener: run the ordered shutdown and forward each phase report to listener
//   (a session's own actor); the console hears the phases as the shutdown's reporter.
//   reload, console config, effective configuration text: a configuration reload's settings
//   for new sessions (sessions already open keep theirs).
using console_actor =
    lifecycle_actor::extend<caf::reacts_to<shutdown_atom, caf::actor>,
                            caf::reacts_to<shutdown_phase_report>,
                            caf::reacts_to<reload_atom, console_config, std::string>>;

// Owns the namespace handles keyed by inode, pid to namespace, the device queue and the TC
// classifiers of every device.
//   sync_cache, pid: find pid's namespace and save a handle for it (the reference agent's
//     SyncCache); answers the inode, 0 when the process is gone or moved meanwhile;
//   resolve: container ids and device counts for connections, plus the device-only flows;
//   netns_list: a netns_joined for every namespace held now, the agent's own included (a
//   restarted conntrack asks).
using netns_actor = lifecycle_actor::extend<
    caf::replies_to<sync_cache_atom, int32_t>::with<uint32_t>,
    caf::replies_to<resolve_atom, netns_resolve_request>::with<netns_resolve_reply>,
    caf::replies_to<netns_list_atom>::with<std::vector<netns_joined>>>;

// Registry name of the netns actor running now (as for conntrack).
constexpr caf::atom_value k_netns_registry_name = caf::atom("netns");

// Owns the IPFIX export (collector links, templates, the bounded record queue) and the traffic
// metric aggregates with their series budget; an internal client of the tracer (client id
// "exporter"), so it sees every connection once, with deltas, as an API client does.
//   traffic: the traffic families of /metrics, rendered as Prometheus text ("" when off).
// stop sends what is queued, then forced-end records for the connections still open.
//   reload, export config: a configuration reload; collectors, encoder and traffic families are
//   rebuilt from it, the book of open flows is kept (no byte reported twice or lost).
using exporter_actor = lifecycle_actor::extend<caf::replies_to<traffic_atom>::with<std::string>,
                                               caf::reacts_to<reload_atom, export_config>>;

// Registry name of the exporter running now: the API asks it for the traffic families.
constexpr caf::atom_value k_exporter_registry_name = caf::atom("exporter");

// The root: starts children in order, restarts them within a budget, runs the ordered
// shutdown, and is the one address the API and console talk to.
using supervisor_actor = caf::typed_actor<
    caf::reacts_to<shutdown_atom>,
    // shutdown, listener: also send listener a shutdown_phase_report as each
    // phase ends. A listener that is a child exits after the others, once
    // it has been told the exit phase ended, so it can report it.
    caf::reacts_to<shutdown_atom, caf::actor>,
    caf::replies_to<get_conns_atom, std::string>::with<connections_reply>,
    // conns_page, client, listing: a paged answer, forwarded to the tracer
    caf::replies_to<conns_page_atom, std::string, uint64_t>::with<connections_reply>,
    caf::replies_to<stats_atom>::with<agent_stats>,
    // stats, deadline_ms: a child that has not answered within deadline_ms
    // shows as not answering (the console asks this way)
    caf::replies_to<stats_atom, uint32_t>::with<agent_stats>,
    caf::replies_to<health_atom>::with<std::string>,
    // reload, configuration in force, report: a configuration reload ran;
    // the children that take a reload get their part, /stats shows the report
    caf::reacts_to<reload_atom, config, reload_report>>;

} // namespace netlens
