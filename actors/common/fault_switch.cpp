#include "actors/common/fault_switch.hpp"

#include <atomic>

namespace netlens::fault_injection {
namespace {
std::atomic<bool> on{false};
} // namespace

void enable() {
  on.store(true, std::memory_order_relaxed);
}

bool enabled() {
  return on.load(std::memory_order_relaxed);
}

} // namespace netlens::fault_injection
