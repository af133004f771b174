// The offset guesser's retry policy with tries that fail on purpose: how many tries, when it
// stops, and what it says when none found the offsets.
#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "actors/offset_guesser/retry_policy.hpp"

using namespace netlens;

namespace {

// A try that fails with "field <n> not found" until try number `good` (1-based; 0: never).
struct scripted_tries {
  uint32_t good = 0;
  uint32_t calls = 0;
  scan_outcome operator()() {
    ++calls;
    scan_outcome out;
    if (calls == good) {
      out.ok = true;
      out.offsets.skc_dport = static_cast<__u16>(100 + calls);
    } else {
      out.errors.push_back("field " + std::to_string(calls) + " not found");
    }
    return out;
  }
};

} // namespace

TEST_CASE("max_tries is clamped to one to five", "[offset_guesser]") {
  CHECK(retry_policy(0).max_tries() == 1);
  CHECK(retry_policy(1).max_tries() == 1);
  CHECK(retry_policy(3).max_tries() == 3);
  CHECK(retry_policy(5).max_tries() == 5);
  CHECK(retry_policy(6).max_tries() == 5);
  CHECK(retry_policy(UINT32_MAX).max_tries() == 5);
}

TEST_CASE("another try follows a failed one until max_tries have failed", "[offset_guesser]") {
  retry_policy three(3);
  CHECK(three.try_again(0));
  CHECK(three.try_again(2));
  CHECK_FALSE(three.try_again(3));
  CHECK_FALSE(three.try_again(4));
}

TEST_CASE("the first try that finds every offset ends the guess", "[offset_guesser]") {
  scripted_tries tries{3};
  retry_outcome r = retry_policy(5).run(std::ref(tries));
  CHECK(r.ok);
  CHECK(r.tries == 3);
  CHECK(tries.calls == 3);
  CHECK(r.offsets.skc_dport == 103); // the good try's offsets
  CHECK(r.error.empty());

  scripted_tries first{1};
  retry_outcome at_once = retry_policy(5).run(std::ref(first));
  CHECK(at_once.ok);
  CHECK(at_once.tries == 1);
  CHECK(first.calls == 1);
}

TEST_CASE("when every try fails the error counts them and names the last failure",
          "[offset_guesser]") {
  scripted_tries never;
  retry_outcome r = retry_policy(2).run(std::ref(never));
  CHECK_FALSE(r.ok);
  CHECK(r.tries == 2);
  CHECK(never.calls == 2);
  CHECK(r.error == "offset guessing failed after 2 tries: field 2 not found");

  SECTION("one try is one try") {
    scripted_tries once;
    retry_outcome one = retry_policy(0).run(std::ref(once));
    CHECK(one.tries == 1);
    CHECK(once.calls == 1);
    CHECK(one.error == "offset guessing failed after 1 try: field 1 not found");
  }
  SECTION("a good try after the last allowed one is never made") {
    scripted_tries late{6};
    retry_outcome capped = retry_policy(9).run(std::ref(late));
    CHECK_FALSE(capped.ok);
    CHECK(late.calls == 5);
    CHECK(capped.error == "offset guessing failed after 5 tries: field 5 not found");
  }
}
