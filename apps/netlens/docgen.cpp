// netlens-docgen: writes netlens(8) and the bash completion of netlens from the command line the
// program itself parses (apps/netlens/cli.cpp), so neither can name a flag the program lacks or
// miss one it has. A build tool: it is not installed.
//
//   netlens-docgen man TEMPLATE VERSION OUTPUT     netlens.8 from TEMPLATE (@...@ filled in)
//   netlens-docgen completion OUTPUT               the bash completion script
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "apps/netlens/cli.hpp"

namespace {

using namespace netlens;

// What an option is, as the man page and the completion need it.
struct option_doc {
  std::vector<std::string> names; // "-c", "--config"; a positional: its name
  bool positional = false;
  bool takes_value = false;
  bool value_optional = false;      // --watch [SECONDS]
  std::string value_name;           // "FILE", "TEXT", "INT", ...
  std::vector<std::string> choices; // from an IsMember check
  std::string description;
  std::string default_value;
};

// CLI11 writes a checked option's type as "TEXT:{tcp,udp}" or "TEXT:FILE".
option_doc describe(const CLI::Option& o) {
  option_doc d;
  d.positional = o.get_positional() && o.get_snames().empty() && o.get_lnames().empty();
  if (d.positional) {
    d.names.push_back(o.get_name(true));
  } else {
    for (const auto& s : o.get_snames())
      d.names.push_back("-" + s);
    for (const auto& l : o.get_lnames())
      d.names.push_back("--" + l);
  }
  d.takes_value = d.positional || o.get_expected_min() > 0 || o.get_expected_max() > 0;
  d.value_optional = !d.positional && o.get_expected_min() == 0 && o.get_expected_max() > 0;
  std::string type = o.get_type_name();
  std::string base = type.substr(0, type.find(':'));
  d.value_name = base.empty() ? "VALUE" : base;
  if (auto open = type.find(":{"); open != std::string::npos) {
    auto close = type.find('}', open);
    std::stringstream list(type.substr(open + 2, close - open - 2));
    for (std::string item; std::getline(list, item, ',');)
      d.choices.push_back(item);
  } else if (type.find(":FILE") != std::string::npos) {
    d.value_name = "FILE";
  }
  if (d.value_optional)
    d.value_name = "SECONDS";
  d.description = o.get_description();
  d.default_value = o.get_default_str();
  return d;
}

std::vector<option_doc> options_of(const CLI::App& app) {
  std::vector<option_doc> out;
  for (const CLI::Option* o : app.get_options())
    out.push_back(describe(*o));
  return out;
}

std::vector<const CLI::App*> subcommands_of(const CLI::App& app) {
  return app.get_subcommands([](const CLI::App*) { return true; });
}

// roff: a backslash, a leading dot or quote, and the hyphens of flags (so they render and
// search as ASCII hyphen-minus).
std::string roff(const std::string& text) {
  std::string out;
  for (char ch : text) {
    if (ch == '\\')
      out += "\\e";
    else if (ch == '-')
      out += "\\-";
    else
      out += ch;
  }
  if (!out.empty() && (out[0] == '.' || out[0] == '\''))
    out.insert(0, "\\&");
  return out;
}

std::string option_head(const option_doc& d) {
  if (d.positional)
    return "\\fI" + roff(d.names.front()) + "\\fR";
  std::string head;
  for (const auto& n : d.names)
    head += (head.empty() ? "" : ", ") + std::string("\\fB") + roff(n) + "\\fR";
  if (!d.takes_value)
    return head;
  std::string value = d.choices.empty() ? d.value_name : "";
  for (const auto& c : d.choices)
    value += (value.empty() ? "" : "|") + c;
  return head +
         (d.value_optional ? " [\\fI" + roff(value) + "\\fR]" : " \\fI" + roff(value) + "\\fR");
}

std::string options_section(const std::vector<option_doc>& opts) {
  std::string out;
  for (const auto& d : opts) {
    out += ".TP\n" + option_head(d) + "\n" + roff(d.description);
    if (!d.default_value.empty() && !d.value_optional)
      out += " (default: " + roff(d.default_value) + ")";
    out += "\n";
  }
  return out;
}

// "[--long VALUE]" with the option's longest name, for the SYNOPSIS.
std::string synopsis_item(const option_doc& d) {
  if (d.positional)
    return "\\fI" + roff(d.names.front()) + "\\fR";
  option_doc longest = d;
  longest.names = {d.names.back()};
  if (longest.choices.size() > 3) // the list is under OPTIONS; the SYNOPSIS stays short
    longest.choices.clear();
  return "[" + option_head(longest) + "]";
}

std::string synopsis(const CLI::App& app) {
  std::string out;
  for (const CLI::App* sub : subcommands_of(app)) {
    out += ".PP\n\\fBnetlens\\fR";
    for (const auto& d : options_of(app))
      if (d.names.back() != "--help")
        out += " " + synopsis_item(d);
    out += " \\fB" + roff(sub->get_name()) + "\\fR";
    for (const auto& d : options_of(*sub))
      if (d.names.back() != "--help")
        out += " " + synopsis_item(d);
    out += "\n";
  }
  return out;
}

std::string commands_section(const CLI::App& app) {
  std::string out;
  for (const CLI::App* sub : subcommands_of(app)) {
    out += ".SS \"netlens " + roff(sub->get_name()) + "\"\n" + roff(sub->get_description()) + ".\n";
    out += options_section(options_of(*sub));
  }
  return out;
}

bool replace_all(std::string& text, const std::string& key, const std::string& value) {
  bool found = false;
  for (auto at = text.find(key); at != std::string::npos; at = text.find(key, at + value.size())) {
    text.replace(at, key.size(), value);
    found = true;
  }
  return found;
}

int write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    std::fprintf(stderr, "netlens-docgen: cannot write %s\n", path.c_str());
    return 1;
  }
  return 0;
}

int write_man(const CLI::App& app, const std::string& template_path, const std::string& version,
              const std::string& output) {
  std::ifstream in(template_path);
  if (!in) {
    std::fprintf(stderr, "netlens-docgen: cannot read %s\n", template_path.c_str());
    return 1;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  std::string text = buf.str();
  const std::pair<std::string, std::string> fills[] = {
      {"@VERSION@", roff(version)},
      {"@SUMMARY@", roff(k_cli_summary)},
      {"@SYNOPSIS@\n", synopsis(app)},
      {"@GLOBAL_OPTIONS@\n", options_section(options_of(app))},
      {"@COMMANDS@\n", commands_section(app)},
  };
  for (const auto& [key, value] : fills) {
    if (!replace_all(text, key, value)) {
      std::fprintf(stderr, "netlens-docgen: %s: no %s in the template\n", template_path.c_str(),
                   key.substr(0, key.find('\n')).c_str());
      return 1;
    }
  }
  return write_file(output, text);
}

std::string bash_words(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words)
    out += (out.empty() ? "" : " ") + w;
  return out;
}

// One case arm per subcommand: its options, which of them take a value, and what values.
int write_completion(const CLI::App& app, const std::string& output) {
  std::string subs, globals, value_cases, option_cases, positional_cases;
  for (const CLI::App* sub : subcommands_of(app))
    subs += (subs.empty() ? "" : " ") + sub->get_name();
  std::vector<std::string> global_names;
  // scope: a subcommand's name, or * for the options that go with any of them.
  auto add_values = [&value_cases](const std::string& scope, const option_doc& d) {
    if (!d.takes_value || d.positional || d.value_optional) // --watch [SECONDS]: options follow
      return;
    const bool path =
        d.value_name == "FILE" || d.names.back() == "--config" || d.names.back() == "--socket";
    const std::string action = !d.choices.empty() ? "compgen -W '" + bash_words(d.choices) + "'"
                               : path             ? std::string("compgen -f")
                                                  : std::string("compgen -W ''");
    const std::string quote = scope == "*" ? "" : "\"";
    for (const auto& n : d.names)
      value_cases += "    " + quote + scope + ":" + n + quote + ") COMPREPLY=($(" + action +
                     " -- \"$cur\")); return ;;\n";
  };
  std::vector<std::string> global_names_but_help;
  for (const auto& d : options_of(app)) {
    for (const auto& n : d.names) {
      global_names.push_back(n);
      if (d.names.back() != "--help")
        global_names_but_help.push_back(n);
    }
    add_values("*", d);
  }
  globals = bash_words(global_names);
  // A subcommand has its own --help; the program's options go after it too (fallthrough).
  const std::string globals_after = bash_words(global_names_but_help);
  for (const CLI::App* sub : subcommands_of(app)) {
    std::vector<std::string> names;
    for (const auto& d : options_of(*sub)) {
      if (d.positional) {
        positional_cases +=
            "    " + sub->get_name() + ") COMPREPLY=($(compgen -f -- \"$cur\"));" + " return ;;\n";
        continue;
      }
      for (const auto& n : d.names)
        names.push_back(n);
      add_values(sub->get_name(), d);
    }
    option_cases += "    " + sub->get_name() + ") opts=\"" + bash_words(names) + " " +
                    globals_after + "\" ;;\n";
  }
  std::string text =
      "# bash completion for netlens(8). Generated by netlens-docgen from the command line the\n"
      "# program parses (apps/netlens/cli.cpp): edit that, not this file.\n"
      "_netlens() {\n"
      "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} sub= i w\n"
      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
      "    w=${COMP_WORDS[i]}\n"
      "    case \" " +
      subs +
      " \" in *\" $w \"*) sub=$w; break ;; esac\n"
      "  done\n"
      "  COMPREPLY=()\n"
      "  case \"${sub:-*}:$prev\" in\n" +
      value_cases +
      "  esac\n"
      "  if [[ -z $sub ]]; then\n"
      "    if [[ $cur == -* ]]; then\n"
      "      COMPREPLY=($(compgen -W '" +
      globals +
      "' -- \"$cur\"))\n"
      "    else\n"
      "      COMPREPLY=($(compgen -W '" +
      subs +
      "' -- \"$cur\"))\n"
      "    fi\n"
      "    return\n"
      "  fi\n"
      "  if [[ $cur != -* ]]; then\n"
      "    case $sub in\n" +
      positional_cases +
      "    esac\n"
      "    return\n"
      "  fi\n"
      "  local opts=\n"
      "  case $sub in\n" +
      option_cases +
      "  esac\n"
      "  COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n"
      "}\n"
      "complete -F _netlens netlens\n";
  return write_file(output, text);
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app;
  cli_values values;
  define_cli(app, values);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 4 && args[0] == "man")
    return write_man(app, args[1], args[2], args[3]);
  if (args.size() == 2 && args[0] == "completion")
    return write_completion(app, args[1]);
  std::fprintf(stderr, "usage: netlens-docgen man TEMPLATE VERSION OUTPUT\n"
                       "       netlens-docgen completion OUTPUT\n");
  return 2;
}
