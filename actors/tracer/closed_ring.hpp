#pragma once
// The closed-connection buffer's storage: a FIFO ring over one contiguous array. std::deque
// allocates a block per two closed records (each is ~220 bytes, libstdc++ blocks are 512) and
// frees one per two pushed out, a malloc and a free per record on the agent's busiest path.
// This ring grows by doubling when full, never past its limit (the caller drops the oldest
// before pushing beyond it), and gives memory back by halving when a quarter full, so it holds
// what is buffered (within a factor of four) and no more.
#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

namespace netlens {

template <class T>
class closed_ring {
public:
  explicit closed_ring(size_t limit) : limit_(limit) {}

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t capacity() const { return slots_.size(); }

  T& operator[](size_t i) { return slots_[wrap(head_ + i)]; }
  const T& operator[](size_t i) const { return slots_[wrap(head_ + i)]; }

  void push_back(const T& v) {
    if (size_ == slots_.size()) {
      size_t grown = slots_.empty() ? k_min_capacity : slots_.size() * 2;
      resize(std::max(std::min(grown, limit_), size_ + 1));
    }
    slots_[wrap(head_ + size_)] = v;
    ++size_;
  }

  // Drops the n oldest (all of them if n > size()).
  void pop_front(size_t n = 1) {
    if (n > size_)
      n = size_;
    head_ = size_ == n ? 0 : wrap(head_ + n);
    size_ -= n;
    size_t capacity = slots_.size();
    while (capacity > k_min_capacity && size_ <= capacity / 4)
      capacity /= 2;
    if (capacity != slots_.size())
      resize(capacity);
  }

private:
  static constexpr size_t k_min_capacity = 256;

  size_t wrap(size_t i) const { return i < slots_.size() ? i : i - slots_.size(); }

  // Moves the contents, in order, to an array of the new capacity (>= size_).
  void resize(size_t capacity) {
    std::vector<T> next(capacity);
    for (size_t i = 0; i < size_; ++i)
      next[i] = std::move(slots_[wrap(head_ + i)]);
    slots_.swap(next);
    head_ = 0;
  }

  size_t limit_;
  std::vector<T> slots_;
  size_t head_ = 0;
  size_t size_ = 0;
};

} // namespace netlens
