// The command line of `netlens`: its subcommands, options and their checks, defined once. The
// program parses with it, and netlens-docgen walks it to write the man page and the bash
// completion, so neither can drift from what the program accepts.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "apps/netlens/connections_table.hpp"

namespace netlens {

// `netlens connections`: where to ask, and how to show the answer.
struct connections_cli {
  std::string socket;
  std::string client = "cli";
  bool json = false;
  bool exact_bytes = false;
  double watch_s = 0; // > 0: --watch, a refreshing table
  connections_filters filters;
};

// Every value the command line can set.
struct cli_values {
  std::string log_level;
  std::string config_path;
  connections_cli connections;
  std::string console_socket;
  std::string console_command;
  std::string check_path;
};

// The subcommands, to ask which one was given.
struct cli_commands {
  CLI::App* run = nullptr;
  CLI::App* connections = nullptr;
  CLI::App* console = nullptr;
  CLI::App* check_config = nullptr;
  CLI::App* version = nullptr;
};

// One line: what netlens is (the CLI's own description and the man page's NAME).
inline constexpr const char* k_cli_summary = "every TCP and UDP connection on this host, from eBPF";

// Defines every subcommand and option on `app`, bound to `values`.
cli_commands define_cli(CLI::App& app, cli_values& values);

} // namespace netlens
