#include "actors/supervisor/supervisor_actor.hpp"
#include "actors/supervisor/start_order.hpp"

#include <algorithm>
#include <variant>

#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <spdlog/spdlog.h>

#include "actors/common/lifecycle.hpp"
#include "config/reload_plan.hpp"

namespace netlens {
namespace {

using self_ptr = counted_self<supervisor_self_actor, supervisor_state>;
using millis = std::chrono::milliseconds;
constexpr auto k_init_timeout = std::chrono::seconds(30);
constexpr auto k_stats_timeout = millis(500); // stats without a deadline (the API's /stats)
constexpr auto k_answer_timeout = std::chrono::seconds(10); // the API waits as long

std::string render(self_ptr self, const caf::error& err) {
  return self->system().render(err);
}

supervisor_state::child* find_child(self_ptr self, const std::string& name) {
  for (auto& c : self->state.children)
    if (c.spec.name == name)
      return &c;
  return nullptr;
}

supervisor_state::child* find_child(self_ptr self, const caf::actor_addr& addr) {
  for (auto& c : self->state.children)
    if (c.handle && c.handle.address() == addr)
      return &c;
  return nullptr;
}

child_directory directory(self_ptr self) {
  child_directory dir;
  for (auto& c : self->state.children)
    if (c.handle)
      dir.emplace(c.spec.name, c.handle);
  dir.emplace("supervisor", caf::actor_cast<caf::actor>(self));
  return dir;
}

void begin_shutdown(self_ptr self, int code, std::string why);
void start_next(self_ptr self);

bool is_listener(self_ptr self, const supervisor_state::child& c) {
  if (!c.handle)
    return false;
  for (auto& l : self->state.phase_listeners)
    if (l.address() == c.handle.address())
      return true;
  return false;
}

// Logs the phase that just ended and tells the listeners.
void phase_ended(self_ptr self, const phase_tracker& tracker, bool last) {
  auto& st = self->state;
  auto now = self->clock().now();
  spdlog::info("{}", tracker.summary(now));
  shutdown_phase_report report;
  report.phase = tracker.phase();
  report.duration_us = tracker.elapsed_us(now);
  report.no_answer = tracker.failures();
  report.last = last;
  report.exit_code = st.exit_code;
  for (auto& l : st.phase_listeners)
    caf::anon_send(l, report);
}

// Children that must restart with `name`: itself and all that depend on it, transitively,
// in start order.
std::vector<size_t> restart_set(self_ptr self, const std::string& name) {
  std::vector<std::string> names{name};
  std::vector<size_t> out;
  for (size_t i = 0; i < self->state.children.size(); ++i) {
    auto& spec = self->state.children[i].spec;
    bool hit = spec.name == name;
    for (auto& dep : spec.depends_on)
      hit = hit || std::find(names.begin(), names.end(), dep) != names.end();
    if (hit) {
      if (spec.name != name)
        names.push_back(spec.name);
      out.push_back(i);
    }
  }
  return out;
}

void spawn_child(self_ptr self, size_t index, std::function<void()> then,
                 std::function<void(const std::string&)> fail) {
  auto& c = self->state.children[index];
  lifecycle_actor h = c.spec.spawn(self->system(), directory(self));
  c.handle = caf::actor_cast<caf::actor>(h);
  c.expected_down = false;
  c.spawned_at = self->clock().now();
  c.rate.reset();
  self->monitor(c.handle);
  std::string name = c.spec.name;
  self->request(h, k_init_timeout, init_atom::value)
      .then([=](caf::ok_atom) { then(); },
            [=](caf::error& err) {
              auto* ch = find_child(self, name);
              std::string why = render(self, err);
              if (ch)
                ch->last_error = why;
              fail(why);
            });
}

void start_next(self_ptr self) {
  auto& st = self->state;
  if (st.phase != supervisor_phase::starting)
    return;
  if (st.next_to_start == st.children.size()) {
    st.phase = supervisor_phase::running;
    if (st.hooks.on_ready)
      st.hooks.on_ready();
    return;
  }
  size_t index = st.next_to_start++;
  std::string name = st.children[index].spec.name;
  spawn_child(
      self, index, [=] { start_next(self); },
      [=](const std::string& why) {
        if (self->state.phase != supervisor_phase::starting)
          return;
        spdlog::error("{} failed to start: {}", name, why);
        begin_shutdown(self, k_exit_startup, name + " failed to start: " + why);
      });
}

void restart_from(self_ptr self, std::vector<size_t> set, size_t pos, std::string crashed) {
  auto& st = self->state;
  if (st.phase != supervisor_phase::running)
    return;
  if (pos == set.size()) {
    spdlog::info("supervisor: {} restarted", crashed);
    return;
  }
  size_t index = set[pos];
  std::string name = st.children[index].spec.name;
  spawn_child(
      self, index, [=] { restart_from(self, set, pos + 1, crashed); },
      [=](const std::string& why) {
        spdlog::error("supervisor: {} failed to restart: {}", name, why);
        auto* c = find_child(self, name);
        if (c && c->handle) {
          c->expected_down = true;
          self->send_exit(c->handle, caf::exit_reason::user_shutdown);
        }
        begin_shutdown(self, k_exit_child_failed, name + " failed to restart: " + why);
      });
}

void on_child_crash(self_ptr self, supervisor_state::child& c, const std::string& why) {
  auto& st = self->state;
  c.last_error = why;
  c.handle = nullptr;
  auto now = self->clock().now();
  if (!c.budget->allow(now)) {
    spdlog::error("supervisor: {} exceeded its restart budget ({} in {} s); shutting down",
                  c.spec.name, st.cfg.restart_budget, st.cfg.restart_window_s);
    begin_shutdown(self, k_exit_child_failed,
                   c.spec.name + " exceeded its restart budget (last error: " + why + ")");
    return;
  }
  c.budget->count_restart();
  // Take down what depends on it; those come back with it.
  for (size_t i : restart_set(self, c.spec.name)) {
    auto& dep = st.children[i];
    if (dep.handle && dep.spec.name != c.spec.name) {
      dep.expected_down = true;
      self->send_exit(dep.handle, caf::exit_reason::user_shutdown);
    }
  }
  auto delay = c.budget->backoff();
  spdlog::warn("supervisor: {} crashed ({}); restart {} in {} ms", c.spec.name, why,
               c.budget->total(), delay.count());
  self->delayed_send(self, delay, restart_atom::value, c.spec.name);
}

void finish(self_ptr self) {
  auto& st = self->state;
  if (st.phase == supervisor_phase::done)
    return;
  if (st.current && !st.current->clean())
    spdlog::info("{}", st.current->summary(self->clock().now()));
  st.current.reset();
  st.phase = supervisor_phase::done;
  auto total = std::chrono::duration_cast<std::chrono::microseconds>(self->clock().now() -
                                                                     st.shutdown_began);
  spdlog::info("shutdown complete in {:.1f} ms, exit code {}", total.count() / 1000.0,
               st.exit_code);
  if (st.hooks.on_exit)
    st.hooks.on_exit(st.exit_code, st.exit_reason);
  self->quit();
}

// The exit phase is over for every child but the listening ones: they hear it ended, then go
// too (the report is ahead of the exit message in their mailbox).
void end_exit_phase(self_ptr self) {
  auto& st = self->state;
  phase_ended(self, *st.current, true);
  std::vector<std::string> listening;
  for (auto& c : st.children)
    if (c.handle)
      listening.push_back(c.spec.name);
  st.current = std::make_unique<phase_tracker>("exit of listeners", listening, self->clock().now());
  if (listening.empty())
    return finish(self);
  for (auto& c : st.children)
    if (c.handle) {
      c.expected_down = true;
      self->send_exit(c.handle, caf::exit_reason::user_shutdown);
    }
  self->delayed_send(self, millis(st.cfg.exit_timeout_ms), deadline_atom::value,
                     std::string("exit of listeners"));
}

void run_exit_phase(self_ptr self) {
  auto& st = self->state;
  st.phase = supervisor_phase::exiting;
  std::vector<std::string> alive;
  for (auto it = st.children.rbegin(); it != st.children.rend(); ++it)
    if (it->handle && !is_listener(self, *it))
      alive.push_back(it->spec.name);
  st.current = std::make_unique<phase_tracker>("exit", alive, self->clock().now());
  st.downs_awaited = alive.size();
  if (alive.empty())
    return end_exit_phase(self);
  for (auto it = st.children.rbegin(); it != st.children.rend(); ++it)
    if (it->handle && !is_listener(self, *it)) {
      it->expected_down = true;
      self->send_exit(it->handle, caf::exit_reason::user_shutdown);
    }
  self->delayed_send(self, millis(st.cfg.exit_timeout_ms), deadline_atom::value,
                     std::string("exit"));
}

// Sends `atom` to every running child selected by `pick`, each with the phase deadline, then
// continues with `next` once all answered or timed out.
template <class Atom>
void run_phase(self_ptr self, const std::string& phase, Atom atom, uint32_t deadline_ms,
               bool (*pick)(const child_spec&), void (*next)(self_ptr)) {
  auto& st = self->state;
  std::vector<std::string> asked;
  for (auto& c : st.children)
    if (c.handle && pick(c.spec))
      asked.push_back(c.spec.name);
  st.current = std::make_unique<phase_tracker>(phase, asked, self->clock().now());
  if (asked.empty()) {
    phase_ended(self, *st.current, false);
    st.current.reset();
    return next(self);
  }
  for (auto& c : st.children) {
    if (!c.handle || !pick(c.spec))
      continue;
    std::string name = c.spec.name;
    auto done = [=] {
      auto& s = self->state;
      phase_ended(self, *s.current, false);
      s.current.reset();
      next(self);
    };
    self->request(caf::actor_cast<lifecycle_actor>(c.handle), millis(deadline_ms), atom)
        .then(
            [=](caf::ok_atom) {
              auto& s = self->state;
              if (s.current && s.current->phase() == phase && s.current->answered(name))
                done();
            },
            [=](caf::error& err) {
              auto& s = self->state;
              if (s.current && s.current->phase() == phase &&
                  s.current->failed(name, render(self, err)))
                done();
            });
  }
}

void run_purge_phase(self_ptr self) {
  self->state.phase = supervisor_phase::purging;
  run_phase(
      self, "purge", purge_atom::value, self->state.cfg.purge_timeout_ms,
      [](const child_spec& s) { return s.purge_phase; }, run_exit_phase);
}

void begin_shutdown(self_ptr self, int code, std::string why) {
  auto& st = self->state;
  if (st.phase >= supervisor_phase::stopping)
    return;
  st.exit_code = code;
  st.exit_reason = std::move(why);
  st.shutdown_began = self->clock().now();
  st.phase = supervisor_phase::stopping;
  spdlog::info("shutdown: stop -> purge -> exit{}",
               st.exit_reason.empty() ? "" : " (" + st.exit_reason + ")");
  run_phase(
      self, "stop", stop_atom::value, st.cfg.stop_timeout_ms,
      [](const child_spec& s) { return s.stop_phase; }, run_purge_phase);
}

// Asks the tracer for a client's answer and keeps the promise until it is delivered or the
// tracer goes down (fail_pending_answers), whichever comes first.
template <class... Ts>
caf::result<connections_reply> ask_tracer(self_ptr self, const tracer_actor& tracer,
                                          Ts&&... request) {
  auto& s = self->state;
  uint64_t id = ++s.next_answer;
  auto rp = self->make_response_promise<connections_reply>();
  s.pending_answers.emplace(id, supervisor_state::pending_answer{"tracer", rp});
  auto settle = [self, id](auto&& answer) {
    auto& pending = self->state.pending_answers;
    auto it = pending.find(id);
    if (it == pending.end())
      return; // already failed: the tracer went down first
    it->second.promise.deliver(std::forward<decltype(answer)>(answer));
    pending.erase(it);
  };
  self->request(tracer, k_answer_timeout, std::forward<Ts>(request)...)
      .then([settle](connections_reply& reply) mutable { settle(std::move(reply)); },
            [settle](caf::error& err) mutable { settle(std::move(err)); });
  return rp;
}

// The tracer that answers connections now, or why there is none.
std::variant<tracer_actor, caf::error> tracer_for_answer(self_ptr self) {
  auto& s = self->state;
  auto* tracer = find_child(self, "tracer");
  if (s.phase != supervisor_phase::running || !tracer || !tracer->handle)
    return caf::make_error(caf::sec::runtime_error,
                           std::string("tracer not available: agent is ") +
                               (s.phase == supervisor_phase::starting  ? "starting"
                                : s.phase == supervisor_phase::running ? "restarting the tracer"
                                                                       : "shutting down"));
  return caf::actor_cast<tracer_actor>(tracer->handle);
}

void fail_pending_answers(self_ptr self, const std::string& child, const std::string& why) {
  auto& pending = self->state.pending_answers;
  for (auto it = pending.begin(); it != pending.end();) {
    if (it->second.child != child) {
      ++it;
      continue;
    }
    it->second.promise.deliver(
        caf::make_error(caf::sec::runtime_error, child + " went down before answering: " + why));
    it = pending.erase(it);
  }
}

uint64_t ms_since(self_ptr self, caf::actor_clock::time_point t) {
  return static_cast<uint64_t>(std::chrono::duration_cast<millis>(self->clock().now() - t).count());
}

// Asks every running child for its statistics; one that has not answered within `deadline`
// keeps a placeholder marked as not answering.
caf::result<agent_stats> collect_stats(self_ptr self, millis deadline) {
  auto& s = self->state;
  auto rp = self->make_response_promise<agent_stats>();
  auto result = std::make_shared<agent_stats>();
  auto pending = std::make_shared<size_t>(0);
  actor_stats mine;
  mine.name = "supervisor";
  mine.state =
      s.phase == supervisor_phase::running ? actor_state::running : actor_state::shutting_down;
  mine.messages_handled = s.handled;
  mine.id = self->id();
  mine.mailbox_size = mailbox_size(self);
  mine.uptime_ms = ms_since(self, s.started_at);
  mine.messages_per_s = s.rate.update(s.handled, self->clock().now());
  mine.counters = {{"config_reloads", s.reloads}, {"config_reload_failures", s.reload_failures}};
  if (s.reloads + s.reload_failures > 0) {
    const auto& r = s.last_reload;
    mine.info.emplace_back("config_last_reload",
                           r.ok ? "ok, applied: " + join_keys(r.applied) : "refused: " + r.error);
    // Only a reload that read the file knows what differs from it.
    if (r.ok)
      mine.info.emplace_back("config_needs_restart", join_keys(r.need_restart));
  }
  result->actors.push_back(mine);
  for (auto& c : s.children) {
    actor_stats placeholder;
    placeholder.name = c.spec.name;
    placeholder.state = c.handle ? actor_state::unresponsive : actor_state::down;
    placeholder.answered = !c.handle; // a child that is down has nothing to answer
    placeholder.restarts = c.budget->total();
    placeholder.last_error = c.last_error;
    if (c.handle) {
      placeholder.id = c.handle.id();
      placeholder.uptime_ms = ms_since(self, c.spawned_at);
      ++*pending;
    }
    result->actors.push_back(placeholder);
  }
  if (*pending == 0) {
    rp.deliver(std::move(*result));
    return rp;
  }
  for (size_t i = 0; i < s.children.size(); ++i) {
    auto& c = s.children[i];
    if (!c.handle)
      continue;
    size_t slot = i + 1;
    auto complete = [=]() mutable {
      if (--*pending == 0)
        rp.deliver(std::move(*result));
    };
    self->request(caf::actor_cast<lifecycle_actor>(c.handle), deadline, stats_atom::value)
        .then(
            [=](actor_stats& got) mutable {
              const actor_stats& before = result->actors[slot];
              got.restarts = before.restarts;
              if (got.last_error.empty())
                got.last_error = before.last_error;
              got.id = before.id;
              got.uptime_ms = before.uptime_ms;
              got.answered = true;
              // The rate belongs to the instance it was measured on; a restarted one starts
              // its own.
              auto* now_running = find_child(self, before.name);
              if (now_running && now_running->handle && now_running->handle.id() == got.id)
                got.messages_per_s =
                    now_running->rate.update(got.messages_handled, self->clock().now());
              result->actors[slot] = std::move(got);
              complete();
            },
            [=](caf::error&) mutable { complete(); });
  }
  return rp;
}

} // namespace

supervisor_self_actor::behavior_type
supervisor_fn(counted_self<supervisor_self_actor, supervisor_state> self, supervisor_config cfg,
              std::vector<child_spec> specs, supervisor_hooks hooks) {
  auto& st = self->state;
  st.cfg = cfg;
  st.hooks = std::move(hooks);
  st.started_at = self->clock().now();
  for (auto& spec : specs) {
    supervisor_state::child c;
    c.spec = std::move(spec);
    c.budget = std::make_unique<restart_budget>(cfg.restart_budget,
                                                std::chrono::seconds(cfg.restart_window_s),
                                                millis(cfg.restart_backoff_ms));
    st.children.push_back(std::move(c));
  }
  self->set_down_handler([=](caf::down_msg& msg) {
    auto& s = self->state;
    auto* c = find_child(self, msg.source);
    if (!c)
      return;
    bool expected = c->expected_down;
    std::string why = msg.reason ? render(self, msg.reason) : "exited";
    fail_pending_answers(self, c->spec.name, why);
    c->handle = nullptr;
    if (s.phase == supervisor_phase::exiting) {
      if (s.current && s.current->answered(c->spec.name)) {
        if (s.current->phase() == "exit")
          end_exit_phase(self);
        else
          finish(self);
      }
      return;
    }
    if (expected)
      return;
    if (s.phase == supervisor_phase::starting) {
      spdlog::error("{} died while starting: {}", c->spec.name, why);
      begin_shutdown(self, k_exit_startup, c->spec.name + " died while starting: " + why);
      return;
    }
    if (s.phase == supervisor_phase::running) {
      on_child_crash(self, *c, why);
      return;
    }
    // Died during stop or purge: the phase's request to it fails and the phase moves on.
    c->last_error = why;
  });
  // Exit on user request from outside (e.g. the actor system shutting down) still runs the
  // protocol; the default would kill us without cleaning up.
  self->set_exit_handler([=](caf::exit_msg& msg) {
    begin_shutdown(self, k_exit_ok, "exit requested: " + render(self, msg.reason));
  });
  std::vector<child_arrows> arrows;
  for (const auto& c : st.children)
    arrows.push_back({c.spec.name, c.spec.depends_on, c.spec.finds});
  if (auto wrong = check_start_order(arrows)) {
    spdlog::error("the children cannot start in this order: {}", *wrong);
    begin_shutdown(self, k_exit_startup, "start order: " + *wrong);
  } else {
    spdlog::info("start order: {}", describe_start_order(arrows));
    start_next(self);
  }
  return {
      [=](shutdown_atom) { begin_shutdown(self, k_exit_ok, ""); },
      [=](shutdown_atom, caf::actor& listener) {
        auto& s = self->state;
        if (listener)
          s.phase_listeners.push_back(std::move(listener));
        begin_shutdown(self, k_exit_ok, "");
      },
      [=](restart_atom, const std::string& name) {
        auto& s = self->state;
        if (s.phase != supervisor_phase::running)
          return;
        restart_from(self, restart_set(self, name), 0, name);
      },
      [=](deadline_atom, const std::string& phase) {
        auto& s = self->state;
        if (s.phase != supervisor_phase::exiting || !s.current || phase != s.current->phase())
          return;
        bool first_wave = phase == "exit";
        for (auto& c : s.children)
          if (c.handle && !(first_wave && is_listener(self, c)))
            s.current->failed(c.spec.name, "no down message before the deadline");
        if (first_wave)
          end_exit_phase(self);
        else
          finish(self);
      },
      [=](get_conns_atom, const std::string& client) -> caf::result<connections_reply> {
        auto tracer = tracer_for_answer(self);
        if (auto* err = std::get_if<caf::error>(&tracer))
          return std::move(*err);
        return ask_tracer(self, std::get<tracer_actor>(tracer), get_conns_atom::value, client);
      },
      [=](conns_page_atom, const std::string& client,
          uint64_t listing) -> caf::result<connections_reply> {
        auto tracer = tracer_for_answer(self);
        if (auto* err = std::get_if<caf::error>(&tracer))
          return std::move(*err);
        return ask_tracer(self, std::get<tracer_actor>(tracer), conns_page_atom::value, client,
                          listing);
      },
      [=](fault_atom, const std::string& name, const std::string& how) -> caf::result<std::string> {
        auto& s = self->state;
        if (!fault_injection::enabled())
          return caf::make_error(caf::sec::runtime_error,
                                 "fault injection is not built into this binary");
        auto* c = find_child(self, name);
        if (!c || !c->handle || s.phase != supervisor_phase::running)
          return caf::make_error(caf::sec::runtime_error, "no running child named " + name);
        if (how == "throw") {
          // Untyped: the switch is in each child's own interface, not in lifecycle_actor.
          caf::anon_send(c->handle, fault_atom::value);
        } else if (how == "exit") {
          self->send_exit(c->handle,
                          caf::make_error(caf::sec::runtime_error, "injected fault (exit)"));
        } else {
          return caf::make_error(caf::sec::runtime_error,
                                 "fault must be \"throw\" or \"exit\", not " + how);
        }
        spdlog::warn("supervisor: injected fault '{}' into {}", how, name);
        return "injected " + how + " into " + name;
      },
      [=](health_atom) -> std::string {
        auto& s = self->state;
        switch (s.phase) {
        case supervisor_phase::starting:
          return "starting";
        case supervisor_phase::running:
          for (auto& c : s.children)
            if (!c.handle)
              return "degraded: " + c.spec.name + " restarting";
          return "ok";
        default:
          return "shutting down";
        }
      },
      [=](stats_atom) -> caf::result<agent_stats> { return collect_stats(self, k_stats_timeout); },
      [=](reload_atom, const config& running, reload_report& report) {
        auto& s = self->state;
        if (!report.ok) {
          ++s.reload_failures;
          s.last_reload.ok = false;
          s.last_reload.error = std::move(report.error);
          return;
        }
        ++s.reloads;
        s.last_reload = std::move(report);
        for (auto& c : s.children)
          if (c.handle && c.spec.reload)
            c.spec.reload(c.handle, running);
      },
      [=](stats_atom, uint32_t deadline_ms) -> caf::result<agent_stats> {
        return collect_stats(self, millis(std::max<uint32_t>(deadline_ms, 1)));
      },
  };
}

} // namespace netlens
