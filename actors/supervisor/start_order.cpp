#include "actors/supervisor/start_order.hpp"

#include <algorithm>

namespace netlens {

std::optional<std::string> check_start_order(const std::vector<child_arrows>& children) {
  for (size_t i = 0; i < children.size(); ++i) {
    const child_arrows& c = children[i];
    for (size_t j = 0; j < i; ++j)
      if (children[j].name == c.name)
        return "two children are named " + c.name;
    for (const std::string& dep : c.depends_on) {
      auto it = std::find_if(children.begin(), children.end(),
                             [&](const child_arrows& x) { return x.name == dep; });
      if (it == children.end())
        return c.name + " depends on " + dep + ", which is not a child";
      if (static_cast<size_t>(it - children.begin()) >= i)
        return c.name + " depends on " + dep + ", which starts after it";
    }
    for (const std::string& found : c.finds)
      if (found == c.name)
        return c.name + " finds itself";
  }
  return std::nullopt;
}

std::string describe_start_order(const std::vector<child_arrows>& children) {
  auto list = [](const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names)
      out += (out.empty() ? "" : ", ") + n;
    return out;
  };
  std::string out;
  for (const child_arrows& c : children) {
    out += out.empty() ? "" : ", ";
    out += c.name;
    std::string notes;
    if (!c.depends_on.empty())
      notes += "after " + list(c.depends_on);
    if (!c.finds.empty())
      notes += (notes.empty() ? "" : "; ") + std::string("finds ") + list(c.finds);
    if (!notes.empty())
      out += " (" + notes + ")";
  }
  return out;
}

} // namespace netlens
