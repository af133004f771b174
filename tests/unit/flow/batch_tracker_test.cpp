#include <catch2/catch.hpp>

#include "flow/batch_tracker.hpp"

using namespace netlens;

TEST_CASE("records taken from a filling batch are skipped when it arrives", "[batch_tracker]") {
  batch_tracker t;
  CHECK(t.take_partial(0, 7, 1) == 0); // take record 0
  CHECK(t.take_partial(0, 7, 3) == 1); // then records 1 and 2, not 0 again
  CHECK(t.take_partial(0, 7, 3) == 3); // nothing new
  CHECK(t.take_partial(1, 7, 2) == 0); // another CPU's batch 7 is its own
  CHECK(t.arrived(0, 7) == 3);         // skip the 3 taken, hand out the 4th
  CHECK(t.arrived(1, 9) == 0);
  auto s = t.stats();
  CHECK(s.pending_taken == 5);
  CHECK(s.duplicates_skipped == 3);
}

TEST_CASE("a read that still shows a batch already arrived takes nothing", "[batch_tracker]") {
  // The program sends the batch, then resets it: a read in between sees it full.
  batch_tracker t;
  CHECK(t.arrived(0, 4) == 0);
  CHECK(t.take_partial(0, 4, 4) == 4);
  CHECK(t.stats().pending_taken == 0);
  // Once the map shows the next id, the record of batch 4 is forgotten, and batch 5 is new.
  t.forget_stale(0, 5, 20, 1000);
  CHECK(t.stats().tracked == 0);
  CHECK(t.take_partial(0, 5, 2) == 0);
}

TEST_CASE("an arrival ends what is left of the CPU's earlier batches", "[batch_tracker]") {
  batch_tracker t;
  t.take_partial(0, 1, 2);
  t.take_partial(1, 1, 2);
  CHECK(t.arrived(0, 2) == 0); // batch 1 of CPU 0 was lost: its state goes, counted
  auto s = t.stats();
  CHECK(s.forgotten == 1);
  CHECK(s.tracked == 2); // CPU 1's batch 1, and CPU 0's batch 2 (arrived)
  CHECK(t.arrived(1, 1) == 2);
}

TEST_CASE("states of batches that moved on are dropped only after the age limit",
          "[batch_tracker]") {
  batch_tracker t;
  t.take_partial(0, 1, 2);
  t.forget_stale(0, 2, 1500, 1000); // just seen moved on: its record may still be on the way
  CHECK(t.stats().tracked == 1);
  t.forget_stale(0, 1, 5000, 1000); // not moved on: kept whatever its age
  CHECK(t.stats().tracked == 1);
  t.forget_stale(0, 2, 5000, 1000);
  CHECK(t.stats().tracked == 0);
  CHECK(t.stats().forgotten == 1);
}

TEST_CASE("a batch that took longer than the age limit to fill is not handed out twice",
          "[batch_tracker]") {
  // Found by fuzz/batch_tracker_fuzz: the age used to run from the first take, so a batch
  // that filled slowly on a quiet CPU was forgotten by the first read after it was sent, and
  // its perf record, arriving just after, handed out again the records taken early on.
  constexpr uint64_t s = 1000000000ull, max_age = 60 * s;
  batch_tracker t;
  CHECK(t.take_partial(0, 0, 3) == 0); // three records taken at once
  // Two minutes later the batch fills and is sent; a read sees the next id before the reader
  // has read the perf record.
  t.forget_stale(0, 1, 120 * s, max_age);
  CHECK(t.stats().tracked == 1);
  CHECK(t.arrived(0, 0) == 3); // the three taken are skipped, not handed out again
  CHECK(t.stats().forgotten == 0);

  // A record that never comes is still forgotten, an age limit after the batch was seen sent.
  CHECK(t.take_partial(1, 0, 2) == 0);
  t.forget_stale(1, 1, 200 * s, max_age);
  t.forget_stale(1, 1, 200 * s + max_age, max_age);
  CHECK(t.stats().forgotten == 0);
  t.forget_stale(1, 1, 201 * s + max_age, max_age);
  CHECK(t.stats().forgotten == 1);
}
