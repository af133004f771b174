#pragma once
// The closed-connection buffer's storage: a FIFO over fixed-size chunks. std::deque allocates a
// block per two closed records (each is ~150 bytes, libstdc++ blocks are 512) and frees one per
// two pushed out, a malloc and a free per record on the agent's busiest path. One contiguous
// array that doubles when full costs the old and the new array at once while it copies: 14.7 MB
// for a moment to grow from 32,768 to 65,536 records, the agent's peak memory under churn.
// Chunks of k_chunk records grow and shrink the buffer a chunk at a time, never copy a record,
// and keep one spare chunk so a buffer that fills and drains around a chunk boundary does not
// allocate on every pass. It holds what is buffered, rounded up to a chunk, plus that spare.
#include <cstddef>
#include <deque>
#include <memory>
#include <utility>

namespace netlens {

template <class T> class closed_ring {
public:
  static constexpr size_t k_chunk = 256;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Records the chunks it holds (the spare included) have room for.
  size_t capacity() const { return (chunks_.size() + (spare_ ? 1 : 0)) * k_chunk; }

  T& operator[](size_t i) { return at(head_ + i); }
  const T& operator[](size_t i) const { return at(head_ + i); }

  void push_back(const T& v) {
    size_t slot = head_ + size_;
    if (slot == chunks_.size() * k_chunk)
      chunks_.push_back(spare_ ? std::move(spare_) : std::make_unique<T[]>(k_chunk));
    at(slot) = v;
    ++size_;
  }

  // Drops the n oldest (all of them if n > size()).
  void pop_front(size_t n = 1) {
    if (n > size_)
      n = size_;
    head_ += n;
    size_ -= n;
    while (head_ >= k_chunk) {
      release(std::move(chunks_.front()));
      chunks_.pop_front();
      head_ -= k_chunk;
    }
    if (size_ == 0) { // empty: start over at the first chunk, keep it, give the rest back
      head_ = 0;
      while (chunks_.size() > 1) {
        release(std::move(chunks_.back()));
        chunks_.pop_back();
      }
    }
  }

private:
  T& at(size_t slot) { return chunks_[slot / k_chunk][slot % k_chunk]; }
  const T& at(size_t slot) const { return chunks_[slot / k_chunk][slot % k_chunk]; }

  void release(std::unique_ptr<T[]> chunk) {
    if (!spare_)
      spare_ = std::move(chunk);
  }

  std::deque<std::unique_ptr<T[]>> chunks_; // chunks_[0][head_] is the oldest record
  std::unique_ptr<T[]> spare_;
  size_t head_ = 0;
  size_t size_ = 0;
};

} // namespace netlens
