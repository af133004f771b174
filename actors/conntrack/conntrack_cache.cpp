#include "actors/conntrack/conntrack_cache.hpp"

#include <netinet/in.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

// Layout, chosen for the lookup rate and the memory budget (see docs/benchmarks.md):
//  - every array is sized at construction, so an insert never allocates. All of them share one
//    anonymous mapping that asks for transparent huge pages: lookups land at random places in
//    ~18 MB, and with 4 KiB pages nearly every one of them would also miss the TLB;
//  - records live in parallel arrays indexed by a uint32 record number: the entries (80 B), the
//    LRU links (8 B), the orphan links with their deadline (16 B), the resync generation and a
//    state byte. A lookup hit touches one entry and a few LRU links; keeping the links in their
//    own 8-byte array keeps the neighbours an LRU move touches in cache;
//  - the index is open addressing with linear probing at a load factor of at most 1/2, each slot
//    holding 32 bits of the key's hash (most misses never read an entry) and a reference to
//    record * 2 + direction (0: the original tuple, 1: the reply tuple). Deletion shifts the
//    cluster back instead of leaving tombstones, so probes stay short under churn;
//  - UDP entries' keys are indexed once more, without their source address (the wildcard
//    index, same layout, several slots may share a key): a socket bound to 0.0.0.0 or :: keeps
//    one flow per peer and does not know the local address each datagram used. The second
//    index costs as much address space as the first and is resident only where UDP entries
//    landed.
namespace netlens {

namespace {

constexpr uint32_t k_nil = 0xffffffffu; // no record
constexpr uint32_t k_empty = 0; // an empty index slot (slots hold ref + 1): zero pages are empty

// Record numbers and slot references are uint32 and the index has 8 slots per record at most;
// 2^28 entries (tens of gigabytes) is far beyond any configuration.
constexpr size_t k_max_capacity = size_t{1} << 28;

// A record's state byte: free, or held with flags.
enum record_state : uint8_t {
  k_free = 0,
  k_held = 1,
  k_orphan = 2,  // on the orphan list
  k_evented = 4, // the event stream has mentioned it (else it is known only from dumps)
  // release() took one of its keys: the connection on that side has closed
  k_orig_released = 8,
  k_reply_released = 16,
};

uint64_t read64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// 64 x 64 -> 128 bit multiply, both halves folded together: every input bit reaches many
// output bits in one instruction.
uint64_t fold_multiply(uint64_t a, uint64_t b) {
  __extension__ using u128 = unsigned __int128;
  u128 p = static_cast<u128>(a) * b;
  return static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
}

// Arbitrary odd constants with about half their bits set.
constexpr uint64_t k_mix_a = 0xa3c59ac2d1e76b35ull;
constexpr uint64_t k_mix_b = 0x6f4e1b7c93a8d257ull;

bool same_endpoints(const ct_endpoints& a, const ct_endpoints& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

constexpr size_t k_huge_page = size_t{2} << 20;

// One anonymous mapping holding every array of the cache. A large one is aligned to and sized
// in huge pages, so the kernel can back all of it with them (one page table walk per 2 MiB).
class arena {
public:
  explicit arena(size_t bytes) {
    const bool huge = bytes >= 2 * k_huge_page;
    const size_t page = huge ? k_huge_page : size_t{4096};
    size_ = (bytes + page - 1) / page * page;
    const size_t mapped = huge ? size_ + k_huge_page : size_;
    void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      throw std::bad_alloc();
    auto* first = static_cast<uint8_t*>(p);
    base_ = first;
    if (huge) {
      // Trim to a 2 MiB aligned start; the advice is a hint, refusing it costs only speed.
      const auto addr = reinterpret_cast<uintptr_t>(first);
      base_ = reinterpret_cast<uint8_t*>((addr + k_huge_page - 1) & ~(k_huge_page - 1));
      if (base_ != first)
        munmap(first, static_cast<size_t>(base_ - first));
      if (const size_t tail = mapped - static_cast<size_t>(base_ - first) - size_; tail != 0)
        munmap(base_ + size_, tail);
      madvise(base_, size_, MADV_HUGEPAGE);
    }
  }
  ~arena() { munmap(base_, size_); }

  // Back to zero pages: nothing resident, everything reads as zero again.
  void zero() {
    if (madvise(base_, size_, MADV_DONTNEED) != 0)
      std::memset(base_, 0, size_);
  }
  arena(const arena&) = delete;
  arena& operator=(const arena&) = delete;

  uint8_t* data() const { return base_; }
  size_t size() const { return size_; }

private:
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
};

// Where each array starts in the arena: n elements of T at a 64-byte aligned offset.
template <typename T> size_t place(size_t& offset, size_t n) {
  const size_t at = (offset + 63) / 64 * 64;
  offset = at + n * sizeof(T);
  return at;
}

size_t index_slots(size_t capacity) {
  // Two keys per record at a load factor of at most 1/2.
  size_t slots = 4;
  while (slots < 4 * capacity)
    slots *= 2;
  return slots;
}

} // namespace

struct conntrack_cache::impl {
  struct slot {
    uint32_t hash;
    uint32_t ref1; // record * 2 + direction, plus one; k_empty (0) when the slot is free
  };
  struct lru_link {
    uint32_t prev; // towards the most recently used
    uint32_t next; // towards the least recently used
  };
  struct orphan_link {
    uint32_t prev; // towards the oldest
    uint32_t next;
    uint64_t deadline_ns;
  };

  struct layout {
    size_t slots, wild, entries, lru, orphans, generation, state, bytes;
  };
  static layout layout_for(size_t capacity) {
    layout l{};
    size_t offset = 0;
    l.slots = place<slot>(offset, index_slots(capacity));
    l.wild = place<slot>(offset, index_slots(capacity));
    l.entries = place<ct_entry>(offset, capacity);
    l.lru = place<lru_link>(offset, capacity);
    l.orphans = place<orphan_link>(offset, capacity);
    l.generation = place<uint32_t>(offset, capacity);
    l.state = place<uint8_t>(offset, capacity);
    l.bytes = offset;
    return l;
  }

  impl(size_t max_entries, uint64_t orphan_ttl_ns, clock_fn clock)
      : capacity_(std::min(std::max<size_t>(max_entries, 1), k_max_capacity)),
        orphan_ttl_ns_(orphan_ttl_ns), clock_(std::move(clock)),
        arena_(layout_for(capacity_).bytes) {
    const layout l = layout_for(capacity_);
    const size_t n_slots = index_slots(capacity_);
    uint8_t* base = arena_.data();
    // The mapping starts as zero pages, which is what every array means empty: an empty slot,
    // a free record. Nothing is written here, so a host without NAT pays no resident memory;
    // pages become resident as entries arrive (records are handed out in order).
    slots_ = reinterpret_cast<slot*>(base + l.slots);
    wild_ = reinterpret_cast<slot*>(base + l.wild);
    entries_ = reinterpret_cast<ct_entry*>(base + l.entries);
    lru_ = reinterpret_cast<lru_link*>(base + l.lru);
    orphans_ = reinterpret_cast<orphan_link*>(base + l.orphans);
    generation_ = reinterpret_cast<uint32_t*>(base + l.generation);
    state_ = reinterpret_cast<uint8_t*>(base + l.state);
    mask_ = static_cast<uint32_t>(n_slots - 1);
    if (!clock_)
      clock_ = [] {
        return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                         std::chrono::steady_clock::now().time_since_epoch())
                                         .count());
      };
    // A per-instance seed: tuples partly come from remote peers, who should not be able to
    // aim their ports at one probe cluster.
    uint64_t s =
        static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
        reinterpret_cast<uintptr_t>(this);
    for (auto& k : seed_) {
      s += k_mix_a;
      k = fold_multiply(s, s ^ k_mix_b);
    }
    reset_lists();
  }

  // Everything but the counters back to the state of a new cache, and its memory back to
  // the kernel.
  void reset() {
    arena_.zero();
    reset_lists();
  }

  void reset_lists() {
    free_head_ = k_nil;
    next_unused_ = 0;
    lru_head_ = lru_tail_ = k_nil;
    orphan_head_ = orphan_tail_ = k_nil;
    size_ = 0;
    orphan_count_ = 0;
    dump_only_ = 0;
    resync_marks_.clear();
  }

  // --- hashing and the index -----------------------------------------------------------------

  // The key is (netns, family, protocol, endpoints); the tuple's padding is not part of it.
  uint64_t hash_of(uint32_t netns, uint8_t family, uint8_t protocol,
                   const ct_endpoints& ends) const {
    const uint64_t head = uint64_t{netns} | uint64_t{family} << 32 | uint64_t{protocol} << 40;
    const uint64_t ports = uint64_t{ends.sport} | uint64_t{ends.dport} << 16;
    // Three independent products (the CPU runs them in parallel), summed so that swapping
    // source and destination does not cancel out, then one more round to spread the sum.
    uint64_t h = fold_multiply(head ^ seed_[0], ports ^ seed_[1]) +
                 fold_multiply(read64(ends.saddr) ^ seed_[2], read64(ends.saddr + 8) ^ seed_[3]) +
                 fold_multiply(read64(ends.daddr) ^ seed_[4], read64(ends.daddr + 8) ^ seed_[5]);
    return fold_multiply(h ^ seed_[6], k_mix_b);
  }
  uint64_t hash_of(const ct_tuple& t) const {
    return hash_of(t.netns, t.family, t.protocol, t.ends);
  }
  uint64_t hash_of(const ct_entry& e, uint32_t direction) const {
    return hash_of(e.netns, e.family, e.protocol, direction == 0 ? e.orig : e.reply);
  }

  static uint32_t slot_hash(uint64_t h) { return static_cast<uint32_t>(h >> 32); }

  // The wildcard index's key: the full key with the source address left out.
  static bool wild_indexed(const ct_entry& e) { return e.protocol == IPPROTO_UDP; }
  static bool is_wildcard(const ct_tuple& t) {
    return t.protocol == IPPROTO_UDP && is_unspecified(t.ends.saddr);
  }
  uint64_t wild_hash_of(uint32_t netns, uint8_t family, uint8_t protocol,
                        const ct_endpoints& ends) const {
    ct_endpoints k = ends;
    std::memset(k.saddr, 0, sizeof k.saddr);
    return hash_of(netns, family, protocol, k);
  }
  uint64_t wild_hash_of(const ct_entry& e, uint32_t direction) const {
    return wild_hash_of(e.netns, e.family, e.protocol, direction == 0 ? e.orig : e.reply);
  }

  bool key_matches(uint32_t ref, uint32_t netns, uint8_t family, uint8_t protocol,
                   const ct_endpoints& ends) const {
    const ct_entry& e = entries_[ref >> 1];
    return e.netns == netns && e.family == family && e.protocol == protocol &&
           same_endpoints((ref & 1) == 0 ? e.orig : e.reply, ends);
  }

  // The slot holding the key, or k_nil.
  uint32_t find(uint64_t h, uint32_t netns, uint8_t family, uint8_t protocol,
                const ct_endpoints& ends) const {
    const uint32_t sh = slot_hash(h);
    for (uint32_t pos = sh & mask_;; pos = (pos + 1) & mask_) {
      const slot& s = slots_[pos];
      if (s.ref1 == k_empty)
        return k_nil;
      if (s.hash == sh && key_matches(s.ref1 - 1, netns, family, protocol, ends))
        return pos;
    }
  }
  uint32_t find(const ct_entry& e, uint32_t direction, uint64_t h) const {
    return find(h, e.netns, e.family, e.protocol, direction == 0 ? e.orig : e.reply);
  }

  // The caller made sure the key is not in the index (the wildcard index takes repeats).
  void index(slot* table, uint64_t h, uint32_t ref) {
    const uint32_t sh = slot_hash(h);
    uint32_t pos = sh & mask_;
    while (table[pos].ref1 != k_empty)
      pos = (pos + 1) & mask_;
    table[pos] = slot{sh, ref + 1};
  }

  // Removes the slot referring to ref (found by identity, not by key, so a record whose two
  // tuples are equal and has only one slot is handled too). Then moves later members of the
  // cluster back so that no probe stops early at the hole.
  void unindex(slot* table, uint64_t h, uint32_t ref) {
    uint32_t hole = slot_hash(h) & mask_;
    for (;; hole = (hole + 1) & mask_) {
      if (table[hole].ref1 == k_empty)
        return;
      if (table[hole].ref1 == ref + 1)
        break;
    }
    for (uint32_t pos = (hole + 1) & mask_; table[pos].ref1 != k_empty; pos = (pos + 1) & mask_) {
      const uint32_t home = table[pos].hash & mask_;
      // The member may fill the hole unless its home lies cyclically in (hole, pos].
      if (((pos - home) & mask_) >= ((pos - hole) & mask_)) {
        table[hole] = table[pos];
        hole = pos;
      }
    }
    table[hole].ref1 = k_empty;
  }

  // A key of record ref >> 1 (direction ref & 1, full hash h) into both indexes, or out.
  void index_key(const ct_entry& e, uint64_t h, uint32_t ref) {
    index(slots_, h, ref);
    if (wild_indexed(e))
      index(wild_, wild_hash_of(e, ref & 1), ref);
  }
  void unindex_key(const ct_entry& e, uint64_t h, uint32_t ref) {
    unindex(slots_, h, ref);
    if (wild_indexed(e))
      unindex(wild_, wild_hash_of(e, ref & 1), ref);
  }

  // The slot of the full index holding t's key, and that key's hash. For a wildcard tuple that
  // no key matches exactly, the key of the one UDP entry that matches it but for the source
  // address; *ambiguous is set when several do (then nothing is found).
  struct located {
    uint32_t pos = k_nil;
    uint64_t h = 0;
  };
  located locate(const ct_tuple& t, bool* ambiguous = nullptr) const {
    located at;
    at.h = hash_of(t);
    at.pos = find(at.h, t.netns, t.family, t.protocol, t.ends);
    if (at.pos != k_nil || !is_wildcard(t))
      return at;
    const uint32_t sh = slot_hash(wild_hash_of(t.netns, t.family, t.protocol, t.ends));
    uint32_t match = k_nil;
    for (uint32_t pos = sh & mask_; wild_[pos].ref1 != k_empty; pos = (pos + 1) & mask_) {
      const slot& s = wild_[pos];
      if (s.hash != sh)
        continue;
      const uint32_t ref = s.ref1 - 1;
      const ct_entry& e = entries_[ref >> 1];
      const ct_endpoints& ends = (ref & 1) == 0 ? e.orig : e.reply;
      if (e.netns != t.netns || e.family != t.family || e.protocol != t.protocol ||
          ends.sport != t.ends.sport || ends.dport != t.ends.dport ||
          std::memcmp(ends.daddr, t.ends.daddr, 16) != 0)
        continue;
      if (match != k_nil) {
        if (ambiguous)
          *ambiguous = true;
        return at;
      }
      match = ref;
    }
    if (match == k_nil)
      return at;
    const ct_entry& e = entries_[match >> 1];
    at.h = hash_of(e, match & 1);
    at.pos = find(e, match & 1, at.h);
    return at;
  }

  // --- the lists -----------------------------------------------------------------------------

  void lru_unlink(uint32_t r) {
    const lru_link l = lru_[r];
    (l.prev == k_nil ? lru_head_ : lru_[l.prev].next) = l.next;
    (l.next == k_nil ? lru_tail_ : lru_[l.next].prev) = l.prev;
  }
  void lru_push_front(uint32_t r) {
    lru_[r] = lru_link{k_nil, lru_head_};
    (lru_head_ == k_nil ? lru_tail_ : lru_[lru_head_].prev) = r;
    lru_head_ = r;
  }
  void touch(uint32_t r) {
    if (r == lru_head_)
      return;
    lru_unlink(r);
    lru_push_front(r);
  }

  void orphan_unlink(uint32_t r) {
    const orphan_link& l = orphans_[r];
    (l.prev == k_nil ? orphan_head_ : orphans_[l.prev].next) = l.next;
    (l.next == k_nil ? orphan_tail_ : orphans_[l.next].prev) = l.prev;
    state_[r] &= ~k_orphan;
    --orphan_count_;
  }
  // Appending keeps the list ordered by deadline as long as the clock does not go backwards,
  // which lets compact stop at the first orphan still alive.
  void orphan_push_back(uint32_t r) {
    const uint64_t now = clock_();
    const uint64_t deadline = now > UINT64_MAX - orphan_ttl_ns_ ? UINT64_MAX : now + orphan_ttl_ns_;
    orphans_[r] = orphan_link{orphan_tail_, k_nil, deadline};
    (orphan_tail_ == k_nil ? orphan_head_ : orphans_[orphan_tail_].next) = r;
    orphan_tail_ = r;
    state_[r] |= k_orphan;
    ++orphan_count_;
  }

  // --- records -------------------------------------------------------------------------------

  // Takes a record out of everything: both keys, the LRU, the orphan list.
  void drop(uint32_t r) {
    const ct_entry& e = entries_[r];
    if (!(state_[r] & k_orig_released))
      unindex_key(e, hash_of(e, 0), r * 2);
    if (!same_endpoints(e.orig, e.reply) && !(state_[r] & k_reply_released))
      unindex_key(e, hash_of(e, 1), r * 2 + 1);
    lru_unlink(r);
    if (state_[r] & k_orphan)
      orphan_unlink(r);
    if (!(state_[r] & k_evented))
      --dump_only_;
    state_[r] = k_free;
    lru_[r].next = free_head_;
    free_head_ = r;
    --size_;
  }

  // A newer entry takes the key: whoever held it (other than keep) goes entirely.
  void displace_holder(const ct_entry& e, uint32_t direction, uint64_t h, uint32_t keep) {
    const uint32_t pos = find(e, direction, h);
    if (pos == k_nil)
      return;
    const uint32_t holder = (slots_[pos].ref1 - 1) >> 1;
    if (holder == keep)
      return;
    drop(holder);
    ++stats_.displaced;
  }

  // The entry's padding is not part of any key: hashing and matching skip it.
  void insert(const ct_entry& e, bool from_events) {
    if (!has_nat(e)) {
      ++stats_.non_nat_skipped;
      return;
    }
    // An entry whose two tuples are equal is stored under that one key.
    const bool one_key = same_endpoints(e.orig, e.reply);
    const uint64_t h_orig = hash_of(e, 0);
    const uint64_t h_reply = hash_of(e, 1);

    uint32_t r = k_nil;
    if (const uint32_t pos = find(e, 0, h_orig); pos != k_nil) {
      const uint32_t ref = slots_[pos].ref1 - 1;
      if ((ref & 1) == 0) {
        r = ref >> 1;
      } else {
        // The new original tuple is another entry's reply tuple: that entry is stale.
        drop(ref >> 1);
        ++stats_.displaced;
      }
    }

    if (r != k_nil) {
      ct_entry& cur = entries_[r];
      if (!same_endpoints(cur.reply, e.reply)) {
        if (!same_endpoints(cur.orig, cur.reply) && !(state_[r] & k_reply_released))
          unindex_key(cur, hash_of(cur, 1), r * 2 + 1);
        cur.reply = e.reply;
        state_[r] &= ~k_reply_released; // a new reply tuple: nobody has closed on it yet
        if (!one_key) {
          displace_holder(e, 1, h_reply, r);
          index_key(cur, h_reply, r * 2 + 1);
        }
      }
      touch(r);
      generation_[r] = epoch_;
      if (from_events && !(state_[r] & k_evented)) {
        state_[r] |= k_evented;
        --dump_only_;
      }
      if (state_[r] & k_orphan) {
        // A dump proves the entry is not only an event we happened to see; a repeated event
        // restarts its time to live.
        orphan_unlink(r);
        if (from_events)
          orphan_push_back(r);
      }
      ++stats_.updated;
      return;
    }

    if (!one_key)
      displace_holder(e, 1, h_reply, k_nil);
    if (free_head_ == k_nil && next_unused_ == capacity_) {
      drop(lru_tail_);
      ++stats_.evictions;
    }
    if (free_head_ != k_nil) {
      r = free_head_;
      free_head_ = lru_[r].next;
    } else {
      r = next_unused_++;
    }
    entries_[r] = e;
    index_key(e, h_orig, r * 2);
    if (!one_key)
      index_key(e, h_reply, r * 2 + 1);
    state_[r] = from_events ? k_held | k_evented : k_held;
    dump_only_ += !from_events;
    lru_push_front(r);
    generation_[r] = epoch_;
    if (from_events)
      orphan_push_back(r);
    ++size_;
    ++stats_.inserted;
  }

  std::optional<ct_hit> lookup(const ct_tuple& t) {
    // Most hosts translate few of their connections: an empty index needs no probe (each one
    // is a cache miss in a table sized for max_entries).
    if (size_ == 0) {
      ++stats_.lookups_miss;
      return std::nullopt;
    }
    bool ambiguous = false;
    const uint32_t pos = locate(t, &ambiguous).pos;
    if (pos == k_nil) {
      ++stats_.lookups_miss;
      stats_.lookups_ambiguous += ambiguous;
      return std::nullopt;
    }
    const uint32_t ref = slots_[pos].ref1 - 1;
    const uint32_t r = ref >> 1;
    if (state_[r] & k_orphan)
      orphan_unlink(r); // claimed: a traced connection needs it
    touch(r);
    ++stats_.lookups_hit;
    const ct_entry& e = entries_[r];
    ct_hit hit;
    hit.nat = (ref & 1) == 0 ? e.reply : e.orig;
    std::memcpy(hit.local, ((ref & 1) == 0 ? e.orig : e.reply).saddr, sizeof hit.local);
    if (std::memcmp(hit.local, t.ends.saddr, sizeof hit.local) != 0)
      ++stats_.lookups_wildcard;
    return hit;
  }

  bool holds(const ct_tuple& t) const { return size_ != 0 && locate(t).pos != k_nil; }

  bool remove(const ct_tuple& t) {
    const uint32_t pos = locate(t).pos;
    if (pos == k_nil)
      return false;
    drop((slots_[pos].ref1 - 1) >> 1);
    ++stats_.removed;
    return true;
  }

  // One side of the entry has closed: its key goes; the entry stays for the other side (both
  // ends of a NAT'd connection may be on this host) until that one is released too.
  bool release(const ct_tuple& t) {
    const auto [pos, h] = locate(t);
    if (pos == k_nil)
      return false;
    const uint32_t ref = slots_[pos].ref1 - 1;
    const uint32_t r = ref >> 1;
    const ct_entry& e = entries_[r];
    const uint8_t other = (ref & 1) == 0 ? k_reply_released : k_orig_released;
    if (same_endpoints(e.orig, e.reply) || (state_[r] & other)) {
      drop(r);
    } else {
      unindex_key(e, h, ref);
      state_[r] |= (ref & 1) == 0 ? k_orig_released : k_reply_released;
    }
    ++stats_.released;
    return true;
  }

  size_t compact() {
    if (orphan_head_ == k_nil)
      return 0;
    const uint64_t now = clock_();
    size_t n = 0;
    while (orphan_head_ != k_nil && orphans_[orphan_head_].deadline_ns <= now) {
      drop(orphan_head_);
      ++n;
    }
    stats_.orphans_expired += n;
    return n;
  }

  // Each insert stamps its record with the current epoch; begin_resync opens a new epoch and
  // remembers it for the namespace, so at the end whatever carries an older stamp was not
  // refreshed since. uint32 epochs: one per resync, they do not wrap in practice.
  void begin_resync(uint32_t netns) {
    const uint32_t mark = ++epoch_;
    for (auto& m : resync_marks_)
      if (m.first == netns) {
        m.second = mark;
        return;
      }
    resync_marks_.emplace_back(netns, mark);
  }

  size_t end_resync(uint32_t netns) {
    auto it = std::find_if(resync_marks_.begin(), resync_marks_.end(),
                           [&](const auto& m) { return m.first == netns; });
    if (it == resync_marks_.end())
      return 0;
    const uint32_t mark = it->second;
    resync_marks_.erase(it);
    size_t n = 0;
    for (uint32_t r = 0; r < next_unused_; ++r) // past it, nothing was ever held
      if (state_[r] != k_free && entries_[r].netns == netns && generation_[r] < mark) {
        drop(r);
        ++n;
      }
    stats_.swept += n;
    return n;
  }

  conntrack_cache_stats stats() const {
    conntrack_cache_stats s = stats_;
    s.entries = size_;
    s.orphans = orphan_count_;
    return s;
  }

  size_t memory_bytes() const {
    return sizeof(*this) + arena_.size() +
           resync_marks_.capacity() * sizeof(std::pair<uint32_t, uint32_t>);
  }

  const size_t capacity_;
  const uint64_t orphan_ttl_ns_;
  clock_fn clock_;
  uint64_t seed_[7] = {};

  static_assert(std::is_trivially_destructible_v<ct_entry>, "arena elements are not destroyed");
  arena arena_;
  // The arrays, all in arena_ (trivially destructible, so nothing to do when it goes).
  slot* slots_ = nullptr;
  slot* wild_ = nullptr; // UDP keys without their source address
  ct_entry* entries_ = nullptr;
  lru_link* lru_ = nullptr; // for a free record, next links the free list
  orphan_link* orphans_ = nullptr;
  uint32_t* generation_ = nullptr;
  uint8_t* state_ = nullptr;
  uint32_t mask_ = 0;

  uint32_t free_head_ = k_nil;   // records freed by drop; used before never-used ones
  uint32_t next_unused_ = 0;     // records from here on have never been used
  uint32_t lru_head_ = k_nil;    // most recently used
  uint32_t lru_tail_ = k_nil;    // next to be evicted
  uint32_t orphan_head_ = k_nil; // first to expire
  uint32_t orphan_tail_ = k_nil;
  size_t size_ = 0;
  size_t orphan_count_ = 0;
  size_t dump_only_ = 0; // held entries without k_evented

  uint32_t epoch_ = 0;
  std::vector<std::pair<uint32_t, uint32_t>> resync_marks_; // netns, epoch at begin_resync

  conntrack_cache_stats stats_;
};

conntrack_cache::conntrack_cache(size_t max_entries, uint64_t orphan_ttl_ns, clock_fn clock)
    : impl_(std::make_unique<impl>(max_entries, orphan_ttl_ns, std::move(clock))) {}

conntrack_cache::~conntrack_cache() = default;
conntrack_cache::conntrack_cache(conntrack_cache&&) noexcept = default;
conntrack_cache& conntrack_cache::operator=(conntrack_cache&&) noexcept = default;

void conntrack_cache::insert(const ct_entry& e, bool from_events) {
  impl_->insert(e, from_events);
}
std::optional<ct_hit> conntrack_cache::lookup(const ct_tuple& t) {
  return impl_->lookup(t);
}
bool conntrack_cache::holds(const ct_tuple& t) const {
  return impl_->holds(t);
}
bool conntrack_cache::remove(const ct_tuple& t) {
  return impl_->remove(t);
}
bool conntrack_cache::release(const ct_tuple& t) {
  return impl_->release(t);
}
size_t conntrack_cache::compact() {
  return impl_->compact();
}
void conntrack_cache::purge() {
  impl_->reset();
}
void conntrack_cache::begin_resync(uint32_t netns) {
  impl_->begin_resync(netns);
}
size_t conntrack_cache::end_resync(uint32_t netns) {
  return impl_->end_resync(netns);
}
conntrack_cache_stats conntrack_cache::stats() const {
  return impl_->stats();
}
size_t conntrack_cache::size() const {
  return impl_->size_;
}
std::vector<ct_cache_row> conntrack_cache::most_recent(size_t n) const {
  const impl& m = *impl_;
  std::vector<ct_cache_row> rows;
  rows.reserve(std::min(n, m.size_));
  for (uint32_t r = m.lru_head_; r != k_nil && rows.size() < n; r = m.lru_[r].next)
    rows.push_back({m.entries_[r], (m.state_[r] & k_orphan) != 0});
  return rows;
}
size_t conntrack_cache::dump_only_entries() const {
  return impl_->dump_only_;
}
size_t conntrack_cache::capacity() const {
  return impl_->capacity_;
}
size_t conntrack_cache::memory_bytes() const {
  return impl_->memory_bytes();
}

} // namespace netlens
