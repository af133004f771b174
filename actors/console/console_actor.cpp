#include "actors/console/console_actor.hpp"

#include "messages/registry.hpp"

#include <chrono>
#include <ctime>

#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/common/lifecycle.hpp"
#include "actors/console/console_format.hpp"
#include "actors/console/console_protocol.hpp"

namespace netlens {
namespace {

using millis = std::chrono::milliseconds;

// The supervisor asks the children with the console's timeout; its own answer gets this much
// more, so a slow child shows as not answering instead of failing the whole command.
constexpr millis k_aggregation_grace{20};
// Longest a `shutdown` session waits for the next phase report; the supervisor's own phase
// deadlines are far shorter, so this only ends a session whose agent lost its supervisor.
constexpr auto k_phase_report_wait = std::chrono::seconds(120);
constexpr millis k_top_refresh{1000};

std::string utc_clock() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%H:%M:%S UTC", &tm);
  return buf;
}

// The command handler of one session, run on its thread. It only sends requests, each with the
// console's timeout and an error handler, through a scoped actor of its own per command (per
// frame in `top`): an answer that comes after its timeout is never taken from a blocking
// actor's mailbox, so it must not outlive the command, or a slow tracer would pile up late
// connection lists in a long session.
class actor_command_handler : public command_handler {
public:
  actor_command_handler(caf::actor_system& sys, supervisor_actor supervisor,
                        caf::actor_addr console, console_config cfg,
                        std::shared_ptr<const std::string> config_text)
      : sys_(sys), supervisor_(std::move(supervisor)), console_(std::move(console)),
        cfg_(std::move(cfg)), config_text_(std::move(config_text)) {}

  command_status run(const console_command& cmd, session_io& io) override {
    switch (cmd.kind) {
    case command_kind::help: {
      auto text = help_text(cmd.argument);
      if (auto* err = std::get_if<parse_error>(&text))
        return fail(io, err->message);
      io.write(std::get<std::string>(text));
      return command_status::ok;
    }
    case command_kind::actors: {
      std::string err;
      auto stats = ask_stats(err);
      if (!stats)
        return fail(io, err);
      io.write(format_actors_table(*stats));
      return command_status::ok;
    }
    case command_kind::inspect: {
      std::string err;
      auto stats = ask_stats(err);
      if (!stats)
        return fail(io, err);
      std::string out;
      if (!format_inspect(*stats, cmd.argument, out))
        return fail(io, out);
      io.write(out);
      return command_status::ok;
    }
    case command_kind::conns:
      return conns(cmd, io);
    case command_kind::cache:
      return cache(cmd, io);
    case command_kind::config:
      io.write(*config_text_);
      return command_status::ok;
    case command_kind::log_level: {
      auto before = spdlog::level::to_string_view(spdlog::get_level());
      spdlog::set_level(spdlog::level::from_str(cmd.argument));
      spdlog::info("console: log level set to {}", cmd.argument);
      io.write("log level " + cmd.argument + " (was " + std::string(before.data(), before.size()) +
               ")\n");
      return command_status::ok;
    }
    case command_kind::top:
      return top(io);
    case command_kind::shutdown:
      return shutdown(io);
    case command_kind::complete: {
      std::vector<std::string> names;
      std::string err;
      if (auto stats = ask_stats(err))
        for (auto& a : stats->actors)
          names.push_back(a.name);
      for (auto& c : completion_candidates(cmd.text, names))
        io.write(c + "\n");
      return command_status::ok;
    }
    case command_kind::quit: // the server ends the session itself
      return command_status::end_session;
    }
    return fail(io, "command not understood"); // every kind is handled above
  }

private:
  millis timeout() const { return millis(cfg_.actor_timeout_ms); }

  static command_status fail(session_io& io, const std::string& why) {
    io.write("error: " + why + "\n");
    return command_status::error;
  }

  // What an error means to an operator: a timeout names who did not answer.
  std::string describe(const caf::error& err, const std::string& who, millis waited) {
    if (err == caf::sec::request_timeout)
      return who + " is not answering (no answer within " + std::to_string(waited.count()) + " ms)";
    if (err.context().match_elements<std::string>())
      return err.context().get_as<std::string>(0);
    return who + ": " + sys_.render(err);
  }

  std::optional<agent_stats> ask_stats(std::string& err) {
    std::optional<agent_stats> out;
    millis waited = timeout() + k_aggregation_grace;
    caf::scoped_actor self{sys_};
    self->request(supervisor_, waited, stats_atom::value, cfg_.actor_timeout_ms)
        .receive([&](agent_stats& s) { out = std::move(s); },
                 [&](caf::error& e) { err = describe(e, "the supervisor", waited); });
    return out;
  }

  // The whole answer in one request. A paged one (as /connections reads it) was tried: under
  // churn every page is a round trip through the supervisor, the tracer, conntrack and the
  // netns actor, and with ~100,000 closed connections waiting for this client it took 180-220
  // ms in the ASan build where the whole answer takes under 100 (e2e_console's bound).
  command_status conns(const console_command& cmd, session_io& io) {
    command_status status = command_status::ok;
    caf::scoped_actor self{sys_};
    self->request(supervisor_, timeout(), get_conns_atom::value, std::string("console"))
        .receive([&](connections_reply& r) { io.write(format_connections(r, cmd.filter)); },
                 [&](caf::error& e) { status = fail(io, describe(e, "the tracer", timeout())); });
    return status;
  }

  command_status cache(const console_command& cmd, session_io& io) {
    auto conntrack = find_conntrack(sys_);
    if (!conntrack)
      return fail(io, "conntrack is not running (disabled, restarting or shutting down)");
    command_status status = command_status::ok;
    caf::scoped_actor self{sys_};
    self->request(conntrack, timeout(), cache_atom::value, cmd.rows)
        .receive([&](conntrack_listing& l) { io.write(format_cache(l)); },
                 [&](caf::error& e) { status = fail(io, describe(e, "conntrack", timeout())); });
    return status;
  }

  command_status top(session_io& io) {
    agent_stats previous;
    auto previous_at = std::chrono::steady_clock::now();
    for (;;) {
      std::string err;
      auto stats = ask_stats(err);
      auto now = std::chrono::steady_clock::now();
      std::string frame(k_clear_screen);
      if (stats) {
        frame += format_top(*stats, previous,
                            std::chrono::duration<double>(now - previous_at).count(), utc_clock());
        previous = std::move(*stats);
        previous_at = now;
      } else {
        frame += "netlens top, " + utc_clock() + " (any key ends it)\n\nerror: " + err + "\n";
      }
      if (!io.write(frame))
        return command_status::end_session;
      switch (io.wait_for_input(k_top_refresh)) {
      case session_io::wait_result::input:
      case session_io::wait_result::stopping:
        return command_status::ok;
      case session_io::wait_result::closed:
        return command_status::end_session;
      case session_io::wait_result::timeout:
        break;
      }
    }
  }

  command_status shutdown(session_io& io) {
    auto console = caf::actor_cast<caf::actor>(console_);
    if (!console)
      return fail(io, "the console actor is gone; the agent is exiting already");
    io.write("shutdown: stop -> purge -> exit\n");
    caf::scoped_actor self{sys_}; // the listener the phase reports come to
    self->send(caf::actor_cast<console_actor>(console), shutdown_atom::value,
               caf::actor_cast<caf::actor>(self));
    auto give_up = std::chrono::steady_clock::now() + k_phase_report_wait;
    bool last = false;
    int exit_code = 0;
    auto on_report = [&](shutdown_phase_report& r) {
      io.write(format_phase(r));
      last = r.last;
      exit_code = r.exit_code;
    };
    while (!last && std::chrono::steady_clock::now() < give_up) {
      bool waited_out = false;
      self->receive(
          on_report, caf::after(millis(200)) >> [&] { waited_out = true; });
      if (waited_out && io.stopping()) {
        // The last report may be queued already: it was sent before the console was told to
        // go.
        self->receive(
            on_report, caf::after(millis(0)) >> [] {});
        break;
      }
    }
    if (!last)
      return fail(io, "the shutdown did not report its exit phase");
    io.write("agent exiting with code " + std::to_string(exit_code) + "\n");
    return command_status::end_session;
  }

  caf::actor_system& sys_;
  supervisor_actor supervisor_;
  caf::actor_addr console_;
  console_config cfg_;
  std::shared_ptr<const std::string> config_text_;
};

} // namespace

console_self_actor::behavior_type console_fn(counted_self<console_self_actor, console_state> self,
                                             console_config cfg, std::string config_text,
                                             supervisor_actor supervisor) {
  self->state.cfg = std::move(cfg);
  self->state.config_text = std::move(config_text);
  self->state.supervisor = std::move(supervisor);
  return {
      [=](init_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (st.server)
          return caf::ok_atom::value;
        console_server_options opts;
        opts.socket_path = st.cfg.socket;
        opts.allowed_uid = st.cfg.allowed_uid;
        opts.max_sessions = st.cfg.max_sessions;
        opts.max_line_bytes = st.cfg.max_line_bytes;
        opts.max_commands_per_s = st.cfg.max_commands_per_s;
        opts.first_line_timeout_ms = st.cfg.first_command_timeout_ms;
        caf::actor_system* sys = &self->system();
        auto sup = st.supervisor;
        auto me = self->address(); // weak: the server lives in this actor's state
        {
          std::lock_guard<std::mutex> lock(st.sessions->mutex);
          st.sessions->cfg = st.cfg;
          st.sessions->config_text = std::make_shared<const std::string>(st.config_text);
        }
        auto settings = st.sessions;
        auto bound = console_server::bind(opts, [=]() -> std::unique_ptr<command_handler> {
          std::lock_guard<std::mutex> lock(settings->mutex);
          return std::make_unique<actor_command_handler>(*sys, sup, me, settings->cfg,
                                                         settings->config_text);
        });
        if (auto* err = std::get_if<std::string>(&bound)) {
          // The console is a window on the agent, not part of its work: without it the agent
          // still traces and serves its API (a second agent on a host, say, finds the default
          // socket taken), so this is a warning and a state, not a failed start.
          st.state = actor_state::unavailable;
          st.error = *err;
          spdlog::warn("console: not available, the agent runs without it: {}", *err);
          return caf::ok_atom::value;
        }
        st.server = std::move(std::get<0>(bound));
        st.server->start();
        st.state = actor_state::running;
        spdlog::info("console: serving on {}", st.cfg.socket);
        return caf::ok_atom::value;
      },
      [=](stop_atom) {
        auto& st = self->state;
        if (st.server) {
          st.server->stop();
          auto c = st.server->counters();
          st.before.sessions_total += c.sessions_total;
          st.before.sessions_refused += c.sessions_refused;
          st.before.peers_refused += c.peers_refused;
          st.before.commands += c.commands;
          st.before.commands_rejected += c.commands_rejected;
          st.before.sessions_timed_out += c.sessions_timed_out;
          st.server.reset();
        }
        st.state = actor_state::stopped;
        return caf::ok_atom::value;
      },
      nothing_to_purge(self),
      fault_handler(self),
      [=](stats_atom) {
        auto& st = self->state;
        console_server_counters c = st.server ? st.server->counters() : console_server_counters{};
        actor_stats s = make_actor_stats(
            "console", st.state, st.handled,
            {{"sessions_open", c.sessions_open},
             {"sessions_total", st.before.sessions_total + c.sessions_total},
             {"sessions_refused", st.before.sessions_refused + c.sessions_refused},
             {"peers_refused", st.before.peers_refused + c.peers_refused},
             {"commands", st.before.commands + c.commands},
             {"commands_rejected", st.before.commands_rejected + c.commands_rejected},
             {"sessions_timed_out", st.before.sessions_timed_out + c.sessions_timed_out}});
        s.mailbox_size = mailbox_size(self);
        s.last_error = st.error;
        return s;
      },
      [=](shutdown_atom, caf::actor& listener) {
        auto& st = self->state;
        st.phase_listeners.push_back(std::move(listener));
        if (st.shutdown_asked)
          return;
        st.shutdown_asked = true;
        spdlog::info("console: shutdown requested by an operator");
        self->send(st.supervisor, shutdown_atom::value, caf::actor_cast<caf::actor>(self));
      },
      // A configuration reload: what new sessions start with. The socket and allowed_uid stay
      // (the reload names them as needing a restart); sessions already open keep their limits.
      [=](reload_atom, const console_config& next, const std::string& config_text) {
        auto& st = self->state;
        st.cfg.max_sessions = next.max_sessions;
        st.cfg.max_line_bytes = next.max_line_bytes;
        st.cfg.max_commands_per_s = next.max_commands_per_s;
        st.cfg.actor_timeout_ms = next.actor_timeout_ms;
        st.cfg.first_command_timeout_ms = next.first_command_timeout_ms;
        st.config_text = config_text;
        {
          std::lock_guard<std::mutex> lock(st.sessions->mutex);
          st.sessions->cfg = st.cfg;
          st.sessions->config_text = std::make_shared<const std::string>(config_text);
        }
        if (st.server)
          st.server->set_limits({st.cfg.max_sessions, st.cfg.max_line_bytes,
                                 st.cfg.max_commands_per_s, st.cfg.first_command_timeout_ms});
      },
      [=](const shutdown_phase_report& report) {
        auto& st = self->state;
        for (auto& l : st.phase_listeners)
          caf::anon_send(l, report);
      },
  };
}

} // namespace netlens
