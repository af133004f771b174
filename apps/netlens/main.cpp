// netlens: run the agent, or talk to a running one.
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <future>
#include <iostream>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sys/signalfd.h>
#include <thread>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <bpf/libbpf.h>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "actors/api/connection_json.hpp"
#include "actors/api/http_server.hpp"
#include "actors/common/fault_switch.hpp"
#include "apps/netlens/agent.hpp"
#include "apps/netlens/cli.hpp"
#include "apps/netlens/connections_table.hpp"
#include "apps/netlens/console_client.hpp"
#include "bpf/expected_kernel_errors.hpp"
#include "config/config_loader.hpp"
#include "flow/unique_fd.hpp"
#include "flow/wake_signal.hpp"

#ifndef NETLENS_VERSION
#define NETLENS_VERSION "0.0.0"
#endif
#ifndef NETLENS_GIT
#define NETLENS_GIT "unknown"
#endif

namespace {

using namespace netlens;

constexpr int k_exit_usage = 2;

int libbpf_log(enum libbpf_print_level level, const char* fmt, va_list args) {
  char buf[1024];
  vsnprintf(buf, sizeof(buf), fmt, args);
  std::string line(buf);
  while (!line.empty() && line.back() == '\n')
    line.pop_back();
  // The kernel's word on a request whose failure the caller expects and handles (see
  // expected_kernel_errors.hpp): not news for the operator.
  if (level == LIBBPF_WARN && expected_kernel_errors::active() &&
      line.find("Kernel error message:") != std::string::npos)
    level = LIBBPF_DEBUG;
  if (level == LIBBPF_WARN)
    spdlog::warn("libbpf: {}", line);
  else if (level == LIBBPF_INFO)
    spdlog::debug("libbpf: {}", line);
  else
    spdlog::trace("libbpf: {}", line);
  return 0;
}

// Loads the config named on the command line, or the defaults. Exits 2 on any problem.
bool load_config_or_report(const std::string& path, config& out) {
  if (path.empty())
    return true;
  auto loaded = load_config_file(path);
  if (auto* err = std::get_if<config_error>(&loaded)) {
    std::fprintf(stderr, "netlens: %s\n", err->message.c_str());
    return false;
  }
  out = std::get<config>(loaded);
  return true;
}

// config_path: the file to read again on SIGHUP (empty: started on the defaults).
// log_level_pinned: --log-level was given and outranks agent.log_level, also on reload.
int run_agent(const config& cfg, const std::string& config_path, bool log_level_pinned) {
  if (unix_socket_answers(cfg.agent.api_socket)) {
    spdlog::error("another netlens is already running and serving on {}; not starting",
                  cfg.agent.api_socket);
    return 1;
  }
  libbpf_set_print(libbpf_log);
  // Large transient buffers (a full map read, a big answer) are mmapped and go back to the
  // OS when freed; glibc's default would raise the threshold after the first one and keep
  // them in the heap for good, and the agent's RSS would stay at its peak.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);

  // Signals go to one thread that turns them into a shutdown or a reload; every other thread,
  // including CAF's, has them blocked. SIGINT, SIGTERM and SIGQUIT run the ordered shutdown
  // (SIGQUIT's default would dump core and leave the TC filters behind); SIGHUP reloads the
  // configuration (systemctl reload, or the terminal closing). A write to a peer that went
  // away must fail with EPIPE where it happens, never kill the agent.
  std::signal(SIGPIPE, SIG_IGN);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGQUIT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  auto opened = wake_signal::open();
  if (auto* err = std::get_if<std::string>(&opened)) {
    spdlog::error("netlens cannot start: {}", *err);
    return 1;
  }
  const wake_signal done = std::move(std::get<wake_signal>(opened));

  auto started = std::chrono::steady_clock::now();
  caf::actor_system_config caf_cfg;
  // Idle workers block on a condition variable ("sharing") instead of CAF's default polling
  // with short sleeps, which costs the host CPU and context switches for nothing. Two workers
  // are enough: the actors that block run detached, on threads of their own.
  caf_cfg.set("scheduler.policy", caf::atom("sharing"));
  caf_cfg.set("scheduler.max-threads", size_t{2});
  caf_cfg.set("logger.verbosity", caf::atom("quiet"));
  caf_cfg.set("logger.console", caf::atom("none"));
  int exit_code = 0;
  {
    caf::actor_system sys{caf_cfg};
    std::promise<std::pair<int, std::string>> exit_channel;
    auto exited = exit_channel.get_future();
    supervisor_hooks hooks;
    hooks.on_ready = [started] {
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - started)
                    .count();
      spdlog::info("netlens ready in {:.1f} ms", us / 1000.0);
    };
    hooks.on_exit = [&exit_channel](int code, std::string why) {
      exit_channel.set_value({code, std::move(why)});
    };
    auto live = std::make_shared<running_config>(cfg);
    const bool exporter_running = agent_runs_exporter(cfg);
    auto supervisor = sys.spawn(supervisor_fn, cfg.supervisor, agent_children(live), hooks);

    // Signals arrive on a signalfd; the wake signal tells the thread the agent is done, so the
    // process exits as soon as the shutdown ends rather than at the next poll timeout.
    unique_fd sig_fd(signalfd(-1, &signals, SFD_CLOEXEC));
    std::thread signal_thread([&] {
      int shutdown_requests = 0;
      pollfd fds[2] = {{sig_fd.get(), POLLIN, 0}, {done.fd(), POLLIN, 0}};
      for (;;) {
        if (poll(fds, 2, -1) < 0) {
          if (errno == EINTR)
            continue;
          break;
        }
        if (fds[1].revents)
          break;
        signalfd_siginfo info{};
        if (read(sig_fd.get(), &info, sizeof(info)) != sizeof(info))
          continue;
        if (info.ssi_signo == SIGHUP) {
          if (shutdown_requests > 0)
            spdlog::info("received SIGHUP during the shutdown; not reloading");
          else {
            spdlog::info("received SIGHUP, reloading the configuration");
            reload_agent(config_path, *live, exporter_running, log_level_pinned, supervisor);
          }
          continue;
        }
        const char* name = info.ssi_signo == SIGINT    ? "SIGINT"
                           : info.ssi_signo == SIGQUIT ? "SIGQUIT"
                                                       : "SIGTERM";
        if (shutdown_requests++ == 0) {
          spdlog::info("received {}, shutting down", name);
          caf::anon_send(supervisor, shutdown_atom::value);
        } else {
          spdlog::warn("received {} again; the ordered shutdown is in progress", name);
        }
      }
    });
    // The exit channel is normally closed by the supervisor; should the supervisor itself die,
    // its down message ends the wait instead of leaving the process hanging.
    caf::scoped_actor watcher{sys};
    watcher->monitor(supervisor);
    std::pair<int, std::string> result;
    bool supervisor_gone = false;
    while (exited.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready &&
           !supervisor_gone) {
      watcher->receive([&](caf::down_msg&) { supervisor_gone = true; },
                       caf::after(std::chrono::milliseconds(100)) >> [] {});
    }
    if (exited.wait_for(std::chrono::milliseconds(0)) == std::future_status::ready)
      result = exited.get();
    else
      result = {1, "the supervisor died without running the ordered shutdown"};
    auto [code, why] = result;
    done.notify();
    signal_thread.join();
    exit_code = code;
    if (code != 0)
      spdlog::error("netlens exits with code {}: {}", code, why);
  }
  return exit_code;
}

// One answer, printed; 0, or 1 with the reason on stderr.
int print_connections_once(const connections_cli& o, const std::string& heading) {
  auto got = http_get_unix(o.socket, connections_target(o.client, o.filters));
  if (auto* err = std::get_if<std::string>(&got)) {
    std::fprintf(stderr, "netlens: %s\n", err->c_str());
    return 1;
  }
  auto& res = std::get<http_result>(got);
  if (res.status != 200) {
    auto body = nlohmann::json::parse(res.body, nullptr, false);
    std::string why = body.is_object() && body.contains("error") && body["error"].is_string()
                          ? body["error"].get<std::string>()
                          : res.body;
    std::fprintf(stderr, "netlens: the agent answered %d: %s\n", res.status, why.c_str());
    return res.status == 400 ? k_exit_usage : 1;
  }
  if (o.json) {
    std::cout << res.body << "\n";
    return 0;
  }
  auto body = nlohmann::json::parse(res.body, nullptr, false);
  if (body.is_discarded()) {
    std::fprintf(stderr, "netlens: the agent sent malformed JSON\n");
    return 1;
  }
  std::cout << heading << format_connections_table(body, o.exact_bytes) << std::flush;
  return 0;
}

int show_connections(const connections_cli& o) {
  if (o.watch_s <= 0)
    return print_connections_once(o, "");
  // Like `watch ss`: the screen cleared and the table drawn again every watch_s seconds, until
  // Ctrl-C (or a failed answer).
  for (;;) {
    std::time_t now = std::time(nullptr);
    char when[64];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
    char heading[160];
    std::snprintf(heading, sizeof heading, "\x1b[H\x1b[2JEvery %.1fs: netlens connections  %s\n\n",
                  o.watch_s, when);
    if (int rc = print_connections_once(o, heading); rc != 0)
      return rc;
    std::this_thread::sleep_for(std::chrono::duration<double>(o.watch_s));
  }
}

} // namespace

int main(int argc, char** argv) {
#ifdef NETLENS_FAULT_INJECTION
  fault_injection::enable(); // build/netlens-fault only: before any actor exists
#endif
  CLI::App app;
  cli_values v;
  const cli_commands cmd = define_cli(app, v);
  auto& conn_opts = v.connections;
  const std::string& log_level = v.log_level;
  const std::string& config_path = v.config_path;

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "netlens: %s (see netlens --help)\n", e.what());
    return k_exit_usage;
  }

  auto logger = spdlog::stderr_color_mt("netlens");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  if (cmd.version->parsed()) {
    std::printf("netlens %s (%s)\n", NETLENS_VERSION, NETLENS_GIT);
    return 0;
  }
  if (cmd.check_config->parsed()) {
    auto loaded = load_config_file(v.check_path);
    if (auto* err = std::get_if<config_error>(&loaded)) {
      std::fprintf(stderr, "netlens: %s\n", err->message.c_str());
      return k_exit_usage;
    }
    std::printf("%s: ok\n", v.check_path.c_str());
    return 0;
  }
  config cfg;
  if (!load_config_or_report(config_path, cfg))
    return k_exit_usage;
  spdlog::set_level(spdlog::level::from_str(log_level.empty() ? cfg.agent.log_level : log_level));
  if (cmd.connections->parsed()) {
    if (cmd.connections->count("--watch") > 0 && conn_opts.watch_s <= 0)
      conn_opts.watch_s = 2;
    if (conn_opts.json && conn_opts.watch_s > 0) {
      std::fprintf(stderr, "netlens: --watch draws a table; it does not go with --json\n");
      return k_exit_usage;
    }
    if (conn_opts.socket.empty())
      conn_opts.socket = cfg.agent.api_socket;
    return show_connections(conn_opts);
  }
  if (cmd.console->parsed())
    return run_console_client(v.console_socket.empty() ? cfg.console.socket : v.console_socket,
                              v.console_command);
  return run_agent(cfg, config_path, !log_level.empty());
}
