//! Large byte buffers for objects being built and ranges read back. When the last `Bytes` of a
//! buffer drops, its memory goes to a small process-wide free list instead of back to the
//! allocator, and the next object reuses it.
//!
//! Why: the broker caps glibc's mmap threshold (so mixed sizes cannot fragment the heap), so
//! every 16 MiB object and 1 MiB block was a fresh mmap whose pages faulted in one by one as
//! they were written, and were unmapped after the put. Profiled at max produce rate, building
//! objects into fresh memory was a quarter of the broker's CPU, half of it page faults.
//!
//! Buffers are aligned to [`SPARE_BUFFER_ALIGN`], so an O_DIRECT put writes an object straight
//! from its buffer. Their memory is zeroed when first allocated, so every byte is initialized
//! (a reused buffer holds stale bytes of an earlier object, which callers overwrite).

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;

use crate::limits::{SPARE_BUFFER_BYTES_MAX, SPARE_BUFFER_IDLE_MAX};

/// Alignment of every buffer: a page, as O_DIRECT wants on any device.
pub const SPARE_BUFFER_ALIGN: usize = 4096;

/// Buffers from this size on are allocated with 1/[`LARGE_HEADROOM_DIVISOR`] to spare, in
/// multiples of [`SIZE_CLASS_LARGE_STEP`].
const SIZE_CLASS_LARGE_FROM: usize = 1 << 20;
const SIZE_CLASS_LARGE_STEP: usize = 1 << 20;

/// A large buffer is allocated 1/this larger than asked: the objects of one upload size
/// differ by their index and straddle a MiB boundary (64 and 65 MiB classes alternated, and
/// neither's spares served the other), so nearly equal sizes must share spares.
const LARGE_HEADROOM_DIVISOR: usize = 32;

/// A reused buffer is not taken for a request this many times smaller than it.
const OVERSIZE_FACTOR_MAX: usize = 4;

/// A page-aligned, initialized byte buffer whose memory is reused after its last `Bytes` drops.
pub struct SpareBuffer {
    memory: Allocation,
    len: usize,
    free_list: &'static Mutex<FreeList>,
}

/// One allocation of `capacity` bytes at `SPARE_BUFFER_ALIGN`, all initialized.
struct Allocation {
    ptr: NonNull<u8>,
    capacity: usize,
}

// SAFETY: an `Allocation` owns its memory exclusively (no aliases survive a move), so it may be
// moved to and dropped on another thread.
unsafe impl Send for Allocation {}
// SAFETY: shared references only read through the pointer.
unsafe impl Sync for Allocation {}

/// Allocations waiting for reuse with when each was given back, oldest first, and their
/// total bytes.
struct FreeList {
    spares: Vec<(Allocation, Instant)>,
    bytes: usize,
}

impl FreeList {
    const EMPTY: FreeList = FreeList {
        spares: Vec::new(),
        bytes: 0,
    };
}

static FREE_LIST: Mutex<FreeList> = Mutex::new(FreeList::EMPTY);

impl Allocation {
    /// The smallest spare of at least `capacity` bytes (and not far larger), or a new one.
    fn take(free_list: &Mutex<FreeList>, capacity: usize) -> Allocation {
        let capacity = capacity.max(1).next_multiple_of(SPARE_BUFFER_ALIGN);
        {
            let mut free = free_list.lock().unwrap_or_else(PoisonError::into_inner);
            let best = free
                .spares
                .iter()
                .enumerate()
                .filter(|(_, (a, _))| {
                    a.capacity >= capacity && a.capacity / OVERSIZE_FACTOR_MAX <= capacity
                })
                .min_by_key(|(_, (a, _))| a.capacity)
                .map(|(i, _)| i);
            if let Some(i) = best {
                let (spare, _) = free.spares.remove(i);
                free.bytes -= spare.capacity;
                return spare;
            }
        }
        let capacity = size_class(capacity);
        let layout = layout(capacity);
        // SAFETY: the layout's size is at least one alignment unit. Zeroed, so all bytes are
        // initialized; the kernel maps the pages lazily.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout);
        };
        Allocation { ptr, capacity }
    }

    /// Keeps this allocation for reuse, freeing the oldest spares to make room for it (the
    /// sizes in use now are those of the buffers given back last) and those idle longer than
    /// [`SPARE_BUFFER_IDLE_MAX`], or frees it when it alone is larger than the free list may
    /// hold.
    fn give_back(self, free_list: &Mutex<FreeList>, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if self.capacity > SPARE_BUFFER_BYTES_MAX {
            return;
        }
        let mut evicted = Vec::new();
        let mut free = free_list.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((oldest, returned)) = free.spares.first()
            && (free.bytes + self.capacity > SPARE_BUFFER_BYTES_MAX
                || now.saturating_duration_since(*returned) > SPARE_BUFFER_IDLE_MAX)
        {
            free.bytes -= oldest.capacity;
            evicted.push(free.spares.remove(0));
        }
        free.bytes += self.capacity;
        free.spares.push((self, now));
        drop(free);
        // Unmapped outside the lock.
        drop(evicted);
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `capacity` bytes at `ptr` are allocated, initialized (zeroed at allocation,
        // written only through `bytes_mut`) and owned by this allocation.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.capacity) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity) }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        if self.capacity == 0 {
            return;
        }
        // SAFETY: allocated in `take` with this very layout, and freed only here.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout(self.capacity)) }
    }
}

/// The capacity to allocate for `capacity` bytes: whole pages, and for a large buffer some
/// headroom in whole MiB, so that a spare a few KiB too small for the next object of about
/// the same size is never the only one left.
fn size_class(capacity: usize) -> usize {
    if capacity < SIZE_CLASS_LARGE_FROM {
        capacity.max(1).next_multiple_of(SPARE_BUFFER_ALIGN)
    } else {
        (capacity + capacity / LARGE_HEADROOM_DIVISOR).next_multiple_of(SIZE_CLASS_LARGE_STEP)
    }
}

fn layout(capacity: usize) -> Layout {
    Layout::from_size_align(capacity, SPARE_BUFFER_ALIGN)
        .unwrap_or_else(|_| panic!("a buffer of {capacity} bytes overflows isize"))
}

impl SpareBuffer {
    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> SpareBuffer {
        SpareBuffer::in_free_list(&FREE_LIST, capacity, 0)
    }

    /// A buffer of `len` bytes of unspecified (initialized) content, for a read to fill.
    pub fn filled(len: usize) -> SpareBuffer {
        SpareBuffer::in_free_list(&FREE_LIST, len, len)
    }

    fn in_free_list(free_list: &'static Mutex<FreeList>, capacity: usize, len: usize) -> Self {
        SpareBuffer {
            memory: Allocation::take(free_list, capacity.max(len)),
            len,
            free_list,
        }
    }

    /// Appends `data`, moving to a larger buffer when it does not fit.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        if end > self.memory.capacity {
            let mut larger = Allocation::take(self.free_list, end.max(self.memory.capacity * 2));
            larger.bytes_mut()[..self.len].copy_from_slice(&self.memory.bytes()[..self.len]);
            std::mem::replace(&mut self.memory, larger).give_back(self.free_list, Instant::now());
        }
        self.memory.bytes_mut()[self.len..end].copy_from_slice(data);
        self.len = end;
    }

    /// The buffer's contents, for a read to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.memory.bytes_mut()[..len]
    }

    /// The buffer as `Bytes`; its memory is reused once the last slice drops.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl std::ops::Deref for SpareBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.memory.bytes()[..self.len]
    }
}

impl AsRef<[u8]> for SpareBuffer {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for SpareBuffer {
    fn drop(&mut self) {
        let memory = std::mem::replace(
            &mut self.memory,
            Allocation {
                ptr: NonNull::dangling(),
                capacity: 0,
            },
        );
        memory.give_back(self.free_list, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_keep_their_bytes_and_grow() {
        let mut buffer = SpareBuffer::with_capacity(10);
        assert_eq!(buffer.as_ptr() as usize % SPARE_BUFFER_ALIGN, 0);
        buffer.extend_from_slice(b"hello ");
        let big = vec![7u8; 3 * SPARE_BUFFER_ALIGN];
        buffer.extend_from_slice(&big);
        assert_eq!(buffer.len(), 6 + big.len());
        assert_eq!(&buffer[..6], b"hello ");
        assert!(buffer[6..].iter().all(|&b| b == 7));
        let bytes = buffer.freeze();
        assert_eq!(bytes.as_ptr() as usize % SPARE_BUFFER_ALIGN, 0);
        assert_eq!(&bytes.slice(0..5)[..], b"hello");
    }

    #[test]
    fn memory_is_reused_after_the_last_slice_drops_on_any_thread() {
        // Its own free list, so tests running in parallel cannot take this spare first.
        static OWN: Mutex<FreeList> = Mutex::new(FreeList::EMPTY);
        let size = 37 * SPARE_BUFFER_ALIGN;
        let mut buffer = SpareBuffer::in_free_list(&OWN, size, size);
        buffer.as_mut_slice().fill(1);
        let address = buffer.as_ptr() as usize;
        let bytes = buffer.freeze();
        let slice = bytes.slice(10..20);
        drop(bytes);
        std::thread::spawn(move || drop(slice)).join().unwrap();
        let again = SpareBuffer::in_free_list(&OWN, size, size);
        assert_eq!(again.as_ptr() as usize, address, "the spare was reused");
        assert!(
            again.iter().all(|&b| b == 1),
            "a reused buffer holds stale, initialized bytes"
        );
        drop(again);
        let small = SpareBuffer::in_free_list(&OWN, size / 8, 0);
        assert_ne!(
            small.as_ptr() as usize,
            address,
            "far too large a spare is not taken"
        );
        drop(small);
        assert_eq!(OWN.lock().unwrap().spares.len(), 2);
    }

    #[test]
    fn a_spare_given_back_to_a_full_free_list_replaces_the_oldest() {
        static OWN: Mutex<FreeList> = Mutex::new(FreeList::EMPTY);
        // Three fit (with their headroom), a fourth would not.
        let quarter = SPARE_BUFFER_BYTES_MAX / 4;
        let old = [0, 1, 2].map(|_| SpareBuffer::in_free_list(&OWN, quarter, quarter));
        let addresses = old.each_ref().map(|b| b.as_ptr() as usize);
        drop(old);
        assert_eq!(OWN.lock().unwrap().spares.len(), 3);
        // A larger size now (an upload that fell behind): it pushes out the two oldest.
        let half = SPARE_BUFFER_BYTES_MAX / 2;
        let new = SpareBuffer::in_free_list(&OWN, half, half);
        let new_address = new.as_ptr() as usize;
        drop(new);
        {
            let free = OWN.lock().unwrap();
            assert!(free.bytes <= SPARE_BUFFER_BYTES_MAX);
            let kept: Vec<usize> = free
                .spares
                .iter()
                .map(|(a, _)| a.ptr.as_ptr() as usize)
                .collect();
            assert_eq!(kept, [addresses[2], new_address]);
        }
        let again = SpareBuffer::in_free_list(&OWN, half, half);
        assert_eq!(
            again.as_ptr() as usize,
            new_address,
            "the newest spare was reused"
        );
        drop(again);
        // Larger than the whole free list: freed, the spares stay.
        drop(SpareBuffer::in_free_list(
            &OWN,
            SPARE_BUFFER_BYTES_MAX + 1,
            0,
        ));
        assert_eq!(OWN.lock().unwrap().spares.len(), 2);
    }

    #[test]
    fn spares_idle_too_long_are_freed_when_another_is_given_back() {
        static OWN: Mutex<FreeList> = Mutex::new(FreeList::EMPTY);
        // Never given anything back, so every take allocates.
        static FRESH: Mutex<FreeList> = Mutex::new(FreeList::EMPTY);
        let size = 3 * SPARE_BUFFER_ALIGN;
        let allocate = || Allocation::take(&FRESH, size);
        let start = Instant::now();
        allocate().give_back(&OWN, start);
        allocate().give_back(&OWN, start + SPARE_BUFFER_IDLE_MAX / 2);
        assert_eq!(OWN.lock().unwrap().spares.len(), 2);
        allocate().give_back(&OWN, start + SPARE_BUFFER_IDLE_MAX * 5 / 4);
        let free = OWN.lock().unwrap();
        assert_eq!(free.spares.len(), 2, "the first, idle too long, was freed");
        assert_eq!(free.bytes, 2 * size);
        assert_eq!(free.spares[0].1, start + SPARE_BUFFER_IDLE_MAX / 2);
    }

    #[test]
    fn large_buffers_of_nearly_equal_size_share_spares() {
        static OWN: Mutex<FreeList> = Mutex::new(FreeList::EMPTY);
        // An object of 64 MiB of data and one a little larger for its index.
        let smaller = 64 << 20;
        let larger = smaller + 5 * SPARE_BUFFER_ALIGN;
        let first = SpareBuffer::in_free_list(&OWN, smaller, smaller);
        let address = first.as_ptr() as usize;
        drop(first);
        let second = SpareBuffer::in_free_list(&OWN, larger, larger);
        assert_eq!(second.as_ptr() as usize, address, "the spare was reused");
        assert_eq!(second.len(), larger);
    }
}
