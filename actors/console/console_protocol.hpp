// The wire between `netlens console` and the console socket: lines of text both ways. The
// server ends every answer with one marker line, so a client knows when an answer is complete
// and whether it failed; operators never see the marker. The marker starts with a byte no
// answer line contains (answers are printable text).
#pragma once

#include <string_view>

namespace netlens {

constexpr char k_answer_end = '\x1e'; // ASCII record separator
constexpr std::string_view k_answer_ok = "\x1eok\n";
constexpr std::string_view k_answer_error = "\x1e"
                                            "error\n";
// `top` answers with frames until the client sends a line (any key); each frame starts by
// clearing the screen.
constexpr std::string_view k_clear_screen = "\x1b[H\x1b[2J";

} // namespace netlens
