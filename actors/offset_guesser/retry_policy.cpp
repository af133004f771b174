#include "actors/offset_guesser/retry_policy.hpp"

#include <algorithm>

namespace netlens {

retry_policy::retry_policy(uint32_t max_tries)
    : max_tries_(std::clamp(max_tries, k_min_tries, k_max_tries)) {}

std::string retry_policy::give_up_text(uint32_t tries, const std::string& last) {
  return "offset guessing failed after " + std::to_string(tries) +
         (tries == 1 ? " try: " : " tries: ") + last;
}

retry_outcome retry_policy::run(const std::function<scan_outcome()>& try_once) const {
  retry_outcome out;
  std::string last;
  while (try_again(out.tries)) {
    ++out.tries;
    scan_outcome got = try_once();
    if (got.ok) {
      out.ok = true;
      out.offsets = got.offsets;
      return out;
    }
    last = got.error_text();
  }
  out.error = give_up_text(out.tries, last);
  return out;
}

} // namespace netlens
