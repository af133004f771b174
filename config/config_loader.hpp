// Reads netlens.toml into a config, rejecting anything the agent would otherwise silently ignore
// or misread, and renders a config back as TOML for the console's `config` command.
#pragma once

#include "config/config.hpp"
#include "flow/failure.hpp"

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace netlens {

// Why a configuration was rejected. The message is one line, `FILE:LINE:COLUMN: key.path: what is
// wrong`, so editors and terminals can jump to the spot; only the first error in file order is
// reported, so the same file always gives the same message. A file that cannot be read also
// carries its errno.
using config_error = failure<>;

// Parses the file at `path`. Missing keys keep the defaults of `config`'s member initialisers.
// Errors are returned, never thrown (allocation failure aside).
std::variant<config, config_error> load_config_file(const std::string& path);

// Same as load_config_file for text already in memory; `source_name` is what messages call it.
std::variant<config, config_error> load_config_string(std::string_view toml_text,
                                                      const std::string& source_name);

// TOML text with every key and its value, in the order of netlens.toml; a key whose value equals
// the one in `defaults` ends with `# default`. Loading the text gives `c` back.
std::string render_effective_config(const config& c, const config& defaults);

// Every key the loader knows, as `table.key`, in the order of netlens.toml.
std::vector<std::string> config_key_paths();

// The keys, as `table.key` in the order of netlens.toml, whose values differ between a and b.
std::vector<std::string> changed_config_keys(const config& a, const config& b);

} // namespace netlens
