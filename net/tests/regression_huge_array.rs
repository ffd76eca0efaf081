//! Regression: a 12-byte Produce body claiming 2^31-1 topics is refused in
//! microseconds without a large allocation. A counting global allocator (in
//! this test binary only) records the largest allocation made while decoding.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use sluice_net::messages::produce_request::ProduceRequest;
use sluice_net::{Decode, DecodeError, RequestErrorKind, decode_request};

struct CountingAlloc;

static LARGEST_ALLOCATION_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION_BYTES.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// The allocation counter is process-wide: tests in this file run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The largest allocation a refused 12-byte body may cause.
const ALLOCATION_BYTES_MAX: usize = 1024;
/// How long refusing it may take (generous for a loaded CI machine).
const REFUSE_TIME_MAX: Duration = Duration::from_millis(1);

/// Produce v3 body: transactional id null, acks -1, timeout 30 s, 2^31-1 topics.
fn hostile_body() -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(-1);
    b.put_i16(-1);
    b.put_i32(30_000);
    b.put_i32(i32::MAX);
    assert_eq!(b.len(), 12);
    b.freeze()
}

#[test]
fn produce_claiming_2pow31_topics_is_refused_fast_without_allocating() {
    let _serial = serial();
    let body = hostile_body();
    let mut frame = BytesMut::new();
    frame.put_i16(0); // Produce
    frame.put_i16(3);
    frame.put_i32(7); // correlation id
    frame.put_i16(-1); // client id null
    frame.put_slice(&body);
    let frame = frame.freeze();

    LARGEST_ALLOCATION_BYTES.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let mut buf = body.clone();
    let direct = ProduceRequest::decode(&mut buf, 3);
    let whole = decode_request(frame);
    let elapsed = start.elapsed();
    let largest = LARGEST_ALLOCATION_BYTES.load(Ordering::Relaxed);

    assert!(
        matches!(
            direct,
            Err(DecodeError::ArrayTooLong {
                count: 2_147_483_647,
                ..
            })
        ),
        "{direct:?}"
    );
    let err = whole.expect_err("must be refused");
    assert_eq!(err.header.as_ref().map(|h| h.correlation_id), Some(7));
    assert!(
        matches!(
            err.kind,
            RequestErrorKind::Malformed(DecodeError::ArrayTooLong { .. })
        ),
        "{err:?}"
    );
    println!("refused in {elapsed:?}, largest allocation {largest} bytes");
    assert!(elapsed < REFUSE_TIME_MAX, "took {elapsed:?}");
    assert!(largest <= ALLOCATION_BYTES_MAX, "allocated {largest} bytes");
}

#[test]
fn flexible_produce_claiming_huge_compact_array_is_refused() {
    let _serial = serial();
    // Produce v9 (flexible): compact array length 0xffff_fffe + 1 as uvarint.
    let mut b = BytesMut::new();
    b.put_u8(0); // transactional id null (compact)
    b.put_i16(1);
    b.put_i32(1000);
    b.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let mut buf = b.freeze();
    let r = ProduceRequest::decode(&mut buf, 9);
    assert!(matches!(r, Err(DecodeError::ArrayTooLong { .. })), "{r:?}");
}

#[test]
fn a_count_that_fits_the_frame_but_lies_allocates_little() {
    let _serial = serial();
    // Metadata v0: topics []string (2 bytes least each). Claim 1,000,000 topics,
    // supply 2,000,000 bytes that are not strings (length -1 = null).
    use sluice_net::messages::metadata_request::MetadataRequest;
    let count = 1_000_000usize;
    let mut b = BytesMut::with_capacity(4 + 2 * count);
    b.put_i32(count as i32);
    b.put_bytes(0xff, 2 * count);
    let body = b.freeze();
    LARGEST_ALLOCATION_BYTES.store(0, Ordering::Relaxed);
    let r = MetadataRequest::decode(&mut body.clone(), 0);
    let largest = LARGEST_ALLOCATION_BYTES.load(Ordering::Relaxed);
    assert!(matches!(r, Err(DecodeError::UnexpectedNull(_))), "{r:?}");
    assert!(
        largest <= sluice_net::wire::ARRAY_PREALLOC_BYTES_MAX,
        "allocated {largest} bytes"
    );
}
