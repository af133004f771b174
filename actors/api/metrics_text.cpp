#include "actors/api/metrics_text.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <utility>
#include <vector>

namespace netlens {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string_view last_word(std::string_view name) {
  size_t us = name.rfind('_');
  return us == std::string_view::npos ? name : name.substr(us + 1);
}

// Time units an actor may end a figure with, and what Prometheus wants instead: its base
// unit, seconds (promtool rejects abbreviated units). A rate per second keeps its meaning.
struct unit_rewrite {
  std::string_view suffix;
  std::string_view replacement;
  int scale_decimals;
};
constexpr unit_rewrite k_unit_rewrites[] = {
    {"_per_s", "_per_second", 0}, {"_sec", "_seconds", 0}, {"_s", "_seconds", 0},
    {"_ms", "_seconds", 3},       {"_us", "_seconds", 6},  {"_ns", "_seconds", 9},
};

// A figure is a gauge when it is a level read at the moment rather than a count of events:
//  - it carries a unit or a ratio (..._seconds after the rewrite, _bytes, _percent, _ratio,
//    or "_per_" anywhere: settings, sizes, rates, averages);
//  - its last word names something held now (entries, capacity, buffered, open, ...);
//  - it describes the latest occurrence of something (first word "last": last_tries);
//  - it is a 0/1 flag (degraded, up, enabled; or first word have/has/is: have_answer).
// Everything else counts events since the actor started and is a counter: an actor adding a
// figure that is a level names it by these rules, or lists it in k_gauge_names.
constexpr std::string_view k_gauge_suffixes[] = {"_seconds", "_bytes", "_percent", "_ratio"};
constexpr std::string_view k_gauge_last_words[] = {
    "entries", "capacity", "buffered", "clients",  "orphans",  "namespaces", "sessions", "open",
    "size",    "depth",    "pending",  "inflight", "degraded", "up",         "enabled"};
constexpr std::string_view k_gauge_first_words[] = {"last", "have", "has", "is"};
constexpr std::string_view k_gauge_names[] = {
    "records_per_wakeup",    "open_handles",   "namespaces_watched",
    "containers_known",      "devices_known",  "tc_attached_devices",
    "collectors_configured", "traffic_series", "traffic_series_limit"};

std::string_view first_word(std::string_view name) {
  return name.substr(0, name.find('_'));
}

bool is_gauge(std::string_view figure) {
  if (ends_with(figure, "_total"))
    return false;
  for (auto s : k_gauge_suffixes)
    if (ends_with(figure, s))
      return true;
  if (figure.find("_per_") != std::string_view::npos)
    return true;
  auto word = last_word(figure);
  for (auto w : k_gauge_last_words)
    if (word == w)
      return true;
  auto first = first_word(figure);
  for (auto w : k_gauge_first_words)
    if (first == w && first.size() < figure.size())
      return true;
  for (auto n : k_gauge_names)
    if (figure == n)
      return true;
  return false;
}

// What each figure the actors report today means, for the HELP line. A figure missing here is
// still exposed, with a HELP that names where it comes from.
const std::map<std::string_view, std::string_view>& figure_help() {
  static const std::map<std::string_view, std::string_view> help = {
      {"api.requests", "HTTP requests served on the API socket (peers allowed)"},
      {"api.peers_refused",
       "API socket connections refused: peer neither root nor the allowed uid"},
      {"api.metrics_port_requests", "HTTP requests served on the TCP metrics port"},
      {"api.connections_open", "HTTP connections open now, API socket and metrics port"},
      {"api.connections_rejected",
       "HTTP connections refused with 503: the bound on open connections was reached"},
      {"api.metrics_moves", "Reloads that moved the metrics listener to a new address or port"},
      {"api.metrics_move_failures",
       "Reloads whose new metrics address or port could not be bound (the old listener stayed)"},
      {"api.connections_timed_out",
       "HTTP connections cut at a deadline: request head not in time, or answer not read"},
      {"compact_ticker.ticks", "Idle-expiry ticks sent to the tracer"},
      {"compact_ticker.interval_ms", "Interval between idle-expiry ticks"},
      {"compact_ticker.compactions", "Compaction ticks sent to conntrack"},
      {"compact_ticker.compact_interval_ms", "Interval between conntrack compactions"},
      {"perf_consumer.records_received", "Closed-connection records decoded and handed out"},
      {"perf_consumer.records_lost", "Closed-connection records the perf buffer reported lost"},
      {"perf_consumer.records_malformed", "Closed-connection records rejected by the decoder"},
      {"perf_consumer.batches", "Batches of closed-connection records sent to the tracer"},
      {"perf_consumer.wakeups", "Times the reader woke with records to read"},
      {"perf_consumer.records_per_wakeup", "Average closed records read per wakeup"},
      {"perf_consumer.flushes", "Buffer reads made because a connections request asked"},
      {"perf_consumer.pending_taken", "Records taken from per-CPU batches still filling (perf)"},
      {"perf_consumer.duplicates_skipped",
       "Records of arrived batches already taken before (perf)"},
      {"perf_consumer.flushes_asked", "Flush requests from the tracer, before its answers"},
      {"exporter.polls", "Polls of the tracer by the exporter"},
      {"exporter.poll_errors", "Polls of the tracer that failed or timed out"},
      {"exporter.reports_queued", "Connection reports encoded for IPFIX"},
      {"exporter.queue_pending", "Reports encoded since the last flush"},
      {"exporter.queue_capacity", "Reports one flush may hold (export.max_queued_records)"},
      {"exporter.queue_dropped", "Reports dropped because the queue was full"},
      {"exporter.records_encoded", "IPFIX data records encoded"},
      {"exporter.encode_errors", "Reports the IPFIX encoder refused"},
      {"exporter.messages_built", "IPFIX messages built"},
      {"exporter.flows_open", "Connections with an IPFIX report still to come"},
      {"exporter.flow_reports", "IPFIX reports made (active timeouts and ends)"},
      {"exporter.flow_ends", "IPFIX reports that ended a flow"},
      {"exporter.flows_lost_close", "Flows whose close record the tracer dropped unread"},
      {"exporter.collectors_configured", "IPFIX collectors configured"},
      {"exporter.collectors_up", "IPFIX collectors with a session up"},
      {"exporter.messages_sent", "IPFIX messages sent, over every collector"},
      {"exporter.bytes_sent", "IPFIX bytes sent, over every collector"},
      {"exporter.records_sent", "IPFIX data records sent, over every collector"},
      {"exporter.messages_dropped", "IPFIX messages dropped (collector down, queue full)"},
      {"exporter.records_dropped", "IPFIX data records dropped with their messages"},
      {"exporter.collector_reconnects", "IPFIX sessions re-established after the first"},
      {"exporter.collector_queued_bytes", "IPFIX bytes waiting in the collector links"},
      {"exporter.traffic_series", "Label sets of the traffic families"},
      {"exporter.traffic_series_limit", "Most label sets kept apart (export.metrics.max_series)"},
      {"exporter.traffic_label_sets_folded", "Distinct label sets folded into other"},
      {"tracer.closed_received", "Closed connections the tracer received"},
      {"tracer.answer_pages", "Pages of /connections answers the tracer served (4,096 "
                              "connections each at most)"},
      {"tracer.closed_dropped", "Closed connections pushed out of the full buffer unread"},
      {"tracer.closed_buffered", "Closed connections held for clients"},
      {"tracer.clients", "API clients with delta state"},
      {"tracer.clients_expired", "API clients forgotten after client_expiry_s"},
      {"tracer.connect_failures_refused", "TCP connects refused (a reset answered the SYN)"},
      {"tracer.connect_failures_timeout", "TCP connects whose SYN retransmissions ran out"},
      {"tracer.connect_failures_reset", "TCP connects reset during the handshake"},
      {"tracer.connect_failures_unreachable", "TCP connects failed on an ICMP unreachable"},
      {"tracer.connect_failures_aborted",
       "TCP sockets closed by their application before the handshake completed"},
      {"tracer.connect_failures_other", "TCP connects failed with another error"},
      {"tracer.connect_failures_unknown",
       "TCP connects that failed for a reason this build cannot read (prebuilt)"},
      {"tracer.udp_idle_expired", "UDP flows closed after udp_idle_timeout_s without traffic"},
      {"tracer.nat_closed", "Closed connections that carried a NAT translation"},
      {"tracer.nat_lookup_errors", "Conntrack lookups that failed or timed out"},
      {"tracer.flush_errors", "Closed-buffer flushes before an answer not completed in 1 s"},
      {"tracer.tcp_reconciled", "Stalled TCP entries found closed against the socket table"},
      {"tracer.tcp_closes_at_destroy",
       "TCP connections ended when their socket was destroyed: their close was never seen"},
      {"tracer.tcp_opens_completed_late",
       "TCP connects whose handshake was never seen, completed at their first I/O or close"},
      {"tracer.kernel_closed_emitted", "Closed records the kernel program emitted"},
      {"tracer.kernel_wakeups", "Closed-record outputs that woke the reader (one per batch)"},
      {"tracer.kernel_closed_lost", "Closed records the kernel could not output (buffer full)"},
      {"tracer.failed_inserts", "Connections not tracked because the active map was full"},
      {"tracer.map_capacity", "Capacity of the active-connection map"},
      {"tracer.map_entries", "Entries in the active-connection map"},
      {"tracer.bpf_recursion_misses", "Program runs the kernel skipped to avoid recursion"},
      {"conntrack.entries", "NAT'd conntrack entries in the cache"},
      {"conntrack.orphans", "Cached entries not yet claimed by a connection"},
      {"conntrack.capacity", "Capacity of the conntrack cache"},
      {"conntrack.memory_bytes", "Memory held by the conntrack cache"},
      {"conntrack.evictions", "Least recently used entries evicted at capacity"},
      {"conntrack.orphans_expired", "Orphans dropped by compaction after orphan_ttl_s"},
      {"conntrack.lookups_hit", "Lookups that found a translation"},
      {"conntrack.lookups_miss", "Lookups that found none"},
      {"conntrack.lookups_wildcard", "Hits of per-peer flows of UDP sockets bound to the wildcard "
                                     "(local address from conntrack)"},
      {"conntrack.lookups_ambiguous",
       "Such flows that matched entries of several local addresses (left untranslated)"},
      {"conntrack.non_nat_skipped", "Conntrack entries not cached because they are not NAT'd"},
      {"conntrack.removed", "Entries removed by a destroy event"},
      {"conntrack.released", "Keys given up by closed connections"},
      {"conntrack.resync_swept", "Entries dropped because a new dump no longer had them"},
      {"conntrack.dump_only_entries", "Entries learned only from a dump (kept fresh by resyncs)"},
      {"conntrack.namespaces", "Network namespaces with a conntrack consumer"},
      {"conntrack.namespaces_joined",
       "Consumers started in namespaces the netns actor handed over"},
      {"conntrack.namespaces_left",
       "Consumers closed because the netns actor let their namespace go"},
      {"conntrack.namespace_errors", "Namespaces whose conntrack consumer could not start"},
      {"conntrack.claims_waited",
       "Closed connections' claims that waited for a new namespace's first dump"},
      {"conntrack.claims_synced",
       "Claims and lookups that missed a tuple and waited for its consumer to read its events "
       "dry"},
      {"conntrack.claims_wait_timeouts",
       "Claims answered at the bound without their namespace's first dump or sync"},
      {"conntrack.claims_pending", "Claims waiting for a first dump or a sync now"},
      {"tracer.netns_resolve_errors", "Attributions the netns actor did not answer in time"},
      {"netns.namespaces", "Network namespaces the netns actor holds"},
      {"netns.namespace_capacity", "Capacity of the namespace cache (netns.max_namespaces)"},
      {"netns.open_handles", "Namespace handles (fds) held open"},
      {"netns.evicted", "Namespaces let go because the cache was full"},
      {"netns.flushed_idle", "Namespaces let go after idle_flush_s without a live process"},
      {"netns.devices_queued", "Devices that waited for their namespace's handle"},
      {"netns.queue_overflows", "Devices refused because their namespace's queue was full"},
      {"netns.namespaces_found", "Namespaces whose handle was saved"},
      {"netns.namespaces_released", "Namespaces let go (evicted, flushed)"},
      {"netns.handle_errors", "Namespace handles that could not be opened"},
      {"netns.handles_rejected",
       "Handles refused: the process moved or died between lookup and open"},
      {"netns.scan_us", "Duration of the last /proc scan"},
      {"netns.scanned_processes", "Processes listed by the last /proc scan"},
      {"netns.exec_events", "Process exec events handled"},
      {"netns.exit_events", "Process exit events handled"},
      {"netns.sync_requests", "sync_cache requests"},
      {"netns.resolves", "Attribution requests answered"},
      {"netns.containers_known", "Processes whose container is known"},
      {"netns.devices_known", "Devices the link watcher reported, attached or not"},
      {"netns.proc_batches_dropped",
       "Exec/exit batches dropped under backlog (a /proc rescan follows)"},
      {"netns.proc_events_lost", "Exec/exit events the kernel could not output (buffer full)"},
      {"netns.namespaces_watched", "Namespaces whose devices are followed"},
      {"netns.link_errors", "Namespaces whose devices could not be followed"},
      {"netns.tc_attached_devices", "Devices with netlens's TC classifiers"},
      {"netns.tc_attached", "TC classifier attachments made"},
      {"netns.tc_detached", "TC classifier attachments removed"},
      {"netns.tc_errors", "TC attach, detach or sweep failures"},
      {"netns.tc_leftovers_removed", "Filters of a killed earlier run removed"},
      {"netns.tc_skipped_no_clsact",
       "Devices left without classifiers: classic TC, no clsact qdisc, none to be created"},
      {"netns.tc_flows_expired", "Flows removed after tc_flow_idle_s without a packet"},
      {"netns.udp_local_namespaces",
       "Namespaces where the sk_lookup program records UDP datagrams' local addresses"},
      {"netns.udp_local_errors", "Namespaces the sk_lookup program could not be attached in"},
      {"netns.udp_local_found",
       "Per-peer flows of wildcard-bound UDP sockets given their local address"},
      {"netns.udp_local_unknown",
       "Such flows whose peer the sk_lookup map did not hold (they keep the wildcard)"},
      {"netns.tc_failed_inserts", "Flows not counted because the classifiers' map was full"},
      {"netns.tc_unparsed", "Packets whose headers the classifiers could not read"},
      {"conntrack.events", "Conntrack events read"},
      {"conntrack.events_kept", "Conntrack events applied after sampling"},
      {"conntrack.events_per_s", "Conntrack events per second, recent rate"},
      {"conntrack.sampled_out", "New-entry events dropped by the rate limit"},
      {"conntrack.sampling_percent", "Share of new-entry events kept by the rate limit"},
      {"conntrack.rate_limit_per_s",
       "New-entry events kept per second at most, as the consumers apply it (0: no limit)"},
      {"conntrack.enobufs", "Netlink receive buffer overruns (each triggers a resync)"},
      {"conntrack.resyncs", "Conntrack table dumps after the initial one"},
      {"conntrack.dumps_failed", "Conntrack dumps that timed out or failed"},
      {"conntrack.malformed", "Conntrack messages the decoder rejected"},
      {"conntrack.unknown", "Conntrack messages of a kind not handled"},
      {"conntrack.periodic_resyncs", "Resyncs made every resync_interval_s"},
      {"conntrack.batches_applied", "Event batches applied to the cache"},
      {"conntrack.batches_dropped", "Event batches dropped because the actor was behind"},
      {"conntrack.degraded", "1 while conntrack is unusable and NAT is not resolved"},
      {"offset_guesser.guesses", "Offset guesses run (answers from the cache included)"},
      {"offset_guesser.failures", "Offset guesses that found no answer"},
      {"offset_guesser.last_tries", "Tries the last offset guess took"},
      {"offset_guesser.last_duration_us", "Duration of the last offset guess"},
      {"offset_guesser.last_from_cache", "1 when the last guess came from the offsets cache"},
      {"offset_guesser.have_answer", "1 when the guesser holds offsets for this kernel"},
      {"console.sessions_open", "Console sessions open now"},
      {"console.sessions_total", "Console sessions opened"},
      {"console.sessions_refused", "Console sessions refused past console.max_sessions"},
      {"console.peers_refused",
       "Console connections refused: peer neither root nor the allowed uid"},
      {"console.commands", "Console commands run"},
      {"console.commands_rejected",
       "Console lines rejected: too long, binary, unknown, malformed or over the rate"},
  };
  return help;
}

// v / 10^decimals, written exactly (no binary floating point on the way).
std::string scaled_decimal(uint64_t v, int decimals) {
  std::string digits = std::to_string(v);
  if (decimals <= 0)
    return digits;
  auto d = static_cast<size_t>(decimals);
  if (digits.size() <= d)
    digits.insert(0, d + 1 - digits.size(), '0');
  std::string out = digits.substr(0, digits.size() - d);
  std::string frac = digits.substr(digits.size() - d);
  while (!frac.empty() && frac.back() == '0')
    frac.pop_back();
  if (!frac.empty())
    out += "." + frac;
  return out;
}

using label_set = std::vector<std::pair<std::string, std::string>>;

struct family {
  std::string name;
  metric_kind kind;
  std::string help;
  std::vector<std::pair<label_set, std::string>> samples;
};

// Families in first-seen order; the text format wants each family's samples together.
class exposition {
public:
  // Adds one sample. A name already taken by a family of the other kind, or a label set the
  // family already has (two figures that sanitise to one name), is refused and noted.
  void add(const std::string& name, metric_kind kind, std::string_view help, label_set labels,
           std::string value) {
    auto it = index_.find(name);
    if (it == index_.end()) {
      it = index_.emplace(name, families_.size()).first;
      families_.push_back({name, kind, std::string(help), {}});
    }
    family& f = families_[it->second];
    bool same_labels = std::any_of(f.samples.begin(), f.samples.end(),
                                   [&](const auto& s) { return s.first == labels; });
    if (f.kind != kind || same_labels) {
      dropped_.push_back(name);
      return;
    }
    f.samples.emplace_back(std::move(labels), std::move(value));
  }

  std::string render() const {
    std::string out;
    for (const auto& f : families_) {
      out += "# HELP " + f.name + " " + escape_help(f.help) + "\n";
      out += "# TYPE " + f.name + (f.kind == metric_kind::counter ? " counter\n" : " gauge\n");
      for (const auto& [labels, value] : f.samples) {
        out += f.name;
        if (!labels.empty()) {
          out += '{';
          for (size_t i = 0; i < labels.size(); ++i) {
            if (i)
              out += ',';
            out += labels[i].first + "=\"" + escape_label_value(labels[i].second) + "\"";
          }
          out += '}';
        }
        out += " " + value + "\n";
      }
    }
    // Plain comments are legal in the format; an operator reading the page sees what was left
    // out instead of a figure silently missing.
    for (const auto& name : dropped_)
      out += "# netlens: a second sample for " + name + " was dropped (name collision)\n";
    return out;
  }

private:
  std::vector<family> families_;
  std::map<std::string, size_t> index_;
  std::vector<std::string> dropped_;
};

// An actor that answered its stats request; the supervisor fills in the others, from what it
// last knew of them.
bool answered(const actor_stats& a) {
  return a.answered && a.state != actor_state::unresponsive && a.state != actor_state::down;
}

// A double as Prometheus reads it back: shortest text that round-trips.
std::string format_double(double v) {
  if (std::isnan(v))
    return "NaN";
  if (std::isinf(v))
    return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  for (int precision = 1; precision < 17; ++precision) {
    char shorter[64];
    std::snprintf(shorter, sizeof(shorter), "%.*g", precision, v);
    if (std::strtod(shorter, nullptr) == v)
      return shorter;
  }
  return buf;
}

} // namespace

figure_metric describe_figure(std::string_view actor, std::string_view figure) {
  std::string base = sanitize_metric_name(figure);
  figure_metric m;
  for (const auto& r : k_unit_rewrites) {
    if (ends_with(base, r.suffix)) {
      base = base.substr(0, base.size() - r.suffix.size()) + std::string(r.replacement);
      m.scale_decimals = r.scale_decimals;
      break;
    }
  }
  m.kind = is_gauge(base) ? metric_kind::gauge : metric_kind::counter;
  if (m.kind == metric_kind::counter && !ends_with(base, "_total"))
    base += "_total";
  m.name = "netlens_" + sanitize_metric_name(actor) + "_" + base;
  return m;
}

std::string render_metrics(const agent_stats& stats) {
  exposition ex;
  for (const auto& a : stats.actors) {
    label_set who{{"actor", a.name}};
    ex.add("netlens_actor_up", metric_kind::gauge,
           "1 when the actor answered the supervisor's stats request in time", who,
           answered(a) ? "1" : "0");
    ex.add("netlens_actor_state", metric_kind::gauge,
           "The actor's life-cycle state, as the label state (value always 1)",
           {{"actor", a.name}, {"state", actor_state_name(a.state)}}, "1");
    ex.add("netlens_actor_messages_handled_total", metric_kind::counter,
           "Messages the actor has handled since it (re)started", who,
           std::to_string(a.messages_handled));
    ex.add("netlens_actor_restarts_total", metric_kind::counter,
           "Times the supervisor restarted the actor", who, std::to_string(a.restarts));
    ex.add("netlens_actor_last_error_present", metric_kind::gauge,
           "1 when the actor has a last error (see /stats or the console for its text)", who,
           a.last_error.empty() ? "0" : "1");
    ex.add("netlens_actor_uptime_seconds", metric_kind::gauge,
           "Time since the running instance of the actor was spawned", who,
           scaled_decimal(a.uptime_ms, 3));
    ex.add("netlens_actor_messages_per_second", metric_kind::gauge,
           "Messages handled per second between the supervisor's last two readings", who,
           format_double(a.messages_per_s));
    // Facts that are not numbers (the tracer's mode, ...): one series each, the text in a label.
    for (const auto& [key, text] : a.info)
      ex.add("netlens_actor_info", metric_kind::gauge,
             "A fact the actor reports that is not a number, as the labels name and value "
             "(value always 1)",
             {{"actor", a.name}, {"name", key}, {"value", text}}, "1");
    // Only the actor can read its own mailbox; one that did not report it has no sample
    // rather than a made-up zero.
    if (a.mailbox_size >= 0)
      ex.add("netlens_actor_mailbox_messages", metric_kind::gauge,
             "Messages waiting in the actor's mailbox when it answered", who,
             std::to_string(a.mailbox_size));
  }
  const auto& help = figure_help();
  for (const auto& a : stats.actors) {
    for (const auto& [figure, value] : a.counters) {
      figure_metric m = describe_figure(a.name, figure);
      auto it = help.find(a.name + "." + figure);
      std::string text = it != help.end() ? std::string(it->second)
                                          : "Figure \"" + figure + "\" of the " + a.name + " actor";
      ex.add(m.name, m.kind, text, {{"actor", a.name}}, scaled_decimal(value, m.scale_decimals));
    }
  }
  return ex.render();
}

} // namespace netlens
