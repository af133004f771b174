#include "apps/netlens/cli.hpp"

namespace netlens {

cli_commands define_cli(CLI::App& app, cli_values& v) {
  cli_commands c;
  app.description(std::string("netlens: ") + k_cli_summary);
  app.require_subcommand(1);
  app.fallthrough(); // --log-level may follow the subcommand too
  app.add_option("--log-level", v.log_level,
                 "log level, outranking agent.log_level of the configuration")
      ->type_name("LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));

  c.run = app.add_subcommand("run", "run the agent in the foreground");
  c.run->add_option("-c,--config", v.config_path, "TOML configuration file")
      ->check(CLI::ExistingFile);

  auto& co = v.connections;
  c.connections = app.add_subcommand("connections", "list the connections a running agent sees");
  auto* conns = c.connections;
  conns->add_flag("--json", co.json, "print the agent's JSON instead of a table");
  conns->add_option("--client", co.client, "client id: deltas are since this client's last call")
      ->type_name("ID");
  conns->add_option("--socket", co.socket, "API socket (default: from --config, or the default)")
      ->type_name("PATH");
  conns->add_option("-c,--config", v.config_path, "configuration whose api_socket to use")
      ->type_name("FILE");
  auto& cf = co.filters;
  conns->add_option("--proto", cf.proto, "only tcp or udp")->check(CLI::IsMember({"tcp", "udp"}));
  conns->add_option("--pid", cf.pid, "only this process id")->type_name("PID");
  conns->add_option("--comm", cf.comm, "only this command (the kernel's comm, exactly)")
      ->type_name("COMM");
  conns->add_option("--container", cf.container, "only containers whose id starts with this")
      ->type_name("ID");
  conns->add_option("--port", cf.port, "only connections with this local or peer port")
      ->type_name("PORT");
  conns->add_option("--state", cf.state, "open, closed, or failed (never established)")
      ->check(CLI::IsMember({"open", "closed", "failed"}));
  conns->add_option("--sort", cf.sort, "bytes, rtt, retransmits or start (descending)")
      ->check(CLI::IsMember({"bytes", "rtt", "retransmits", "start"}));
  conns->add_option("--top", cf.top, "at most N connections (after --sort)")->type_name("N");
  conns
      ->add_option("--watch", co.watch_s, "redraw the table every SECONDS (default 2) until Ctrl-C")
      ->type_name("SECONDS")
      ->expected(0, 1)
      ->default_str("2");
  conns->add_flag("--bytes", co.exact_bytes,
                  "exact byte counts instead of human-readable sizes (1.5K, 3.2M)");

  c.console = app.add_subcommand("console", "the introspection console of a running agent");
  c.console
      ->add_option("--socket", v.console_socket,
                   "console socket (default: from --config, or the default)")
      ->type_name("PATH");
  c.console->add_option("-c,--config", v.config_path, "configuration whose console.socket to use")
      ->type_name("FILE");
  c.console
      ->add_option("-e", v.console_command, "run this one command and exit (non-zero on error)")
      ->type_name("COMMAND");

  c.check_config = app.add_subcommand("check-config", "validate a configuration file");
  c.check_config->add_option("file", v.check_path, "TOML configuration file")->required();

  c.version = app.add_subcommand("version", "print the version");
  return c;
}

} // namespace netlens
