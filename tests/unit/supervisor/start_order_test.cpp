#include <catch2/catch.hpp>

#include "actors/supervisor/start_order.hpp"

using namespace netlens;

TEST_CASE("a start order is refused when a child depends on a later or unknown one",
          "[start_order]") {
  std::vector<child_arrows> good = {{"conntrack", {}, {"netns"}},
                                    {"netns", {}, {"conntrack"}},
                                    {"tracer", {}, {"conntrack", "netns", "perf_consumer"}},
                                    {"perf_consumer", {"tracer"}, {}},
                                    {"api", {}, {"exporter"}}}; // exporter not run: allowed
  CHECK_FALSE(check_start_order(good));
  CHECK(describe_start_order(good) ==
        "conntrack (finds netns), netns (finds conntrack), tracer (finds conntrack, netns, "
        "perf_consumer), perf_consumer (after tracer), api (finds exporter)");

  std::vector<child_arrows> late = {{"perf_consumer", {"tracer"}, {}}, {"tracer", {}, {}}};
  CHECK(check_start_order(late) == std::string("perf_consumer depends on tracer, which starts "
                                               "after it"));
  std::vector<child_arrows> unknown = {{"compact_ticker", {"tracr"}, {}}};
  CHECK(check_start_order(unknown) ==
        std::string("compact_ticker depends on tracr, which is not a child"));
  std::vector<child_arrows> twice = {{"api", {}, {}}, {"api", {}, {}}};
  CHECK(check_start_order(twice) == std::string("two children are named api"));
  std::vector<child_arrows> self_find = {{"netns", {}, {"netns"}}};
  CHECK(check_start_order(self_find) == std::string("netns finds itself"));
  std::vector<child_arrows> both = {{"tracer", {}, {}}, {"exporter", {"tracer"}, {"tracer"}}};
  CHECK(describe_start_order(both) == "tracer, exporter (after tracer; finds tracer)");
}
