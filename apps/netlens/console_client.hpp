// `netlens console`: the operator's side of the console socket. Interactive with readline
// (line editing, history, tab completion asked of the server), or one command with -e.
#pragma once

#include <string>

namespace netlens {

// Returns the process exit code: 0, or 1 when the agent could not be reached, refused the
// session, or (with -e) answered the command with an error.
int run_console_client(const std::string& socket_path, const std::string& command);

} // namespace netlens
