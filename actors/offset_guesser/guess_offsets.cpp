#include "actors/offset_guesser/guess_offsets.hpp"

#include <chrono>
#include <cstdio>

#include "actors/offset_guesser/guess_session.hpp"
#include "actors/offset_guesser/offset_cache.hpp"
#include "actors/offset_guesser/retry_policy.hpp"

namespace netlens {

guess_report guess_offsets(const guess_settings& settings) {
  auto start = std::chrono::steady_clock::now();
  auto elapsed_us = [&] {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                     std::chrono::steady_clock::now() - start)
                                     .count());
  };
  guess_report report;
  std::string release = kernel_release();
  std::string path =
      settings.cache_dir.empty() ? "" : offsets_cache_path(settings.cache_dir, release);
  if (!path.empty()) {
    cache_read cached = read_offsets_cache(path, release);
    switch (cached.status) {
    case cache_status::hit:
      report.ok = true;
      report.offsets = cached.offsets;
      report.from_cache = true;
      report.duration_us = elapsed_us();
      return report;
    case cache_status::corrupt:
      report.cache_note = cached.why + "; guessed again";
      std::remove(path.c_str());
      break;
    case cache_status::missing:
      break;
    }
  }
  auto opened = guess_session::open();
  if (auto* err = std::get_if<std::string>(&opened)) {
    report.error = *err;
    report.duration_us = elapsed_us();
    return report;
  }
  auto& session = *std::get<0>(opened);
  const auto timeout = std::chrono::milliseconds(settings.try_timeout_ms);
  retry_outcome tried =
      retry_policy(settings.max_tries).run([&] { return session.guess_once(timeout); });
  report.tries = tried.tries;
  report.ok = tried.ok;
  if (!tried.ok)
    report.error = tried.error;
  else {
    report.offsets = tried.offsets;
    if (!path.empty())
      if (auto err = write_offsets_cache(path, release, report.offsets); !err.empty())
        report.cache_note += (report.cache_note.empty() ? "" : "; ") + err;
  }
  report.duration_us = elapsed_us();
  return report;
}

} // namespace netlens
