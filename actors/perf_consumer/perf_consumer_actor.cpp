#include "actors/perf_consumer/perf_consumer_actor.hpp"

#include <memory>

#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/common/lifecycle.hpp"
#include "messages/registry.hpp"
#include <spdlog/spdlog.h>

namespace netlens {

perf_consumer_self_actor::behavior_type
perf_consumer_fn(counted_self<perf_consumer_self_actor, perf_consumer_state> self,
                 tracer_actor tracer, std::shared_ptr<const closed_buffer> buffer) {
  self->state.tracer = tracer;
  // The tracer finds whichever instance runs now to ask for flushes.
  auto* sys = &self->system();
  caf::actor_addr me = self->address();
  self->attach_functor(
      [sys, me](const caf::error&) { unpublish_if(*sys, k_perf_consumer_registry_name, me); });
  // The reader lives as long as the actor's state; its destructor joins the thread on any exit.
  return {
      [=](init_atom) -> caf::result<caf::ok_atom> {
        auto& st = self->state;
        if (st.reader)
          return caf::ok_atom::value;
        auto target = st.tracer;
        // Runs on the poll thread: it only sends, it never touches actor state.
        auto opened =
            closed_reader::open(buffer, [target](std::vector<nl_conn>&& recs, uint64_t flushed) {
              caf::anon_send(target, closed_batch{std::move(recs), flushed});
            });
        if (auto* err = std::get_if<std::string>(&opened)) {
          st.state = actor_state::failed;
          return caf::make_error(caf::sec::runtime_error, "perf_consumer: " + *err);
        }
        st.reader = std::move(std::get<0>(opened));
        st.reader->start();
        st.state = actor_state::running;
        publish_as(self, k_perf_consumer_registry_name);
        return caf::ok_atom::value;
      },
      [=](flush_atom, uint64_t ticket) {
        auto& st = self->state;
        ++st.flushes_asked;
        if (st.reader) {
          st.reader->ask_drain(ticket); // the poll thread pushes the batch that completes it
          return;
        }
        // Stopped: everything was handed over already.
        self->send(st.tracer, closed_batch{{}, ticket});
      },
      [=](stop_atom) {
        auto& st = self->state;
        if (st.reader) {
          st.reader->stop(); // joins the thread, then hands the tracer what was left
          st.final_stats = st.reader->stats();
          st.reader.reset();
        }
        st.state = actor_state::stopped;
        return caf::ok_atom::value;
      },
      nothing_to_purge(self),
      fault_handler(self),
      [=](stats_atom) {
        auto& st = self->state;
        closed_reader_stats r = st.reader ? st.reader->stats() : st.final_stats;
        actor_stats s =
            make_actor_stats("perf_consumer", st.state, st.handled,
                             {{"records_received", r.records},
                              {"records_lost", r.lost},
                              {"records_malformed", r.malformed},
                              {"batches", r.batches},
                              {"wakeups", r.wakeups},
                              {"records_per_wakeup", r.wakeups ? r.records / r.wakeups : r.records},
                              {"flushes", r.drains},
                              {"pending_taken", r.pending_taken},
                              {"duplicates_skipped", r.duplicates_skipped},
                              {"flushes_asked", st.flushes_asked}});
        s.mailbox_size = mailbox_size(self);
        return s;
      },
  };
}

} // namespace netlens
