//! Encoding a response frame: a fetch as segments sharing its records' `Bytes` (written with
//! one vectored write, no copy of the records); any other response into a chunk of the shard's
//! pool when it is large, else the heap.

use bytes::{Bytes, BytesMut};
use futures::future::{FutureExt, LocalBoxFuture};
use sluice_net::Response;

use crate::chunk_pool::ChunkPool;

/// Responses of at least this many bytes (a metadata response of thousands of partitions)
/// are encoded into a chunk of the pool.
const POOLED_RESPONSE_BYTES_MIN: usize = 64 * 1024;

/// A future resolving to the encoded response of one request (None: nothing to send).
pub type PendingResponse = LocalBoxFuture<'static, Option<ResponseFrame>>;

/// One encoded response frame, size prefix included: the connection writes its segments in
/// order, in one vectored write where the socket takes it. Or, in the frame's place, the
/// end of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFrame {
    /// The whole frame in one buffer.
    Contiguous(Bytes),
    /// A fetch: large records are the partitions' own `Bytes` (log or block cache), the
    /// rest small inline segments between them (`sluice_net::encode_response_scattered`).
    Scattered(Vec<Bytes>),
    /// No frame: the connection closes once the answers before this one are written. Kafka's
    /// answer to a produce with acks=0 that failed, since its client waits for no response
    /// and learns of the failure only by reconnecting (and refreshing its metadata).
    Close,
}

impl ResponseFrame {
    /// The segments to write, in order.
    pub fn segments(&self) -> &[Bytes] {
        match self {
            ResponseFrame::Contiguous(bytes) => std::slice::from_ref(bytes),
            ResponseFrame::Scattered(segments) => segments,
            ResponseFrame::Close => &[],
        }
    }

    /// The frame in one buffer (a copy when scattered): for clients in tests and benches
    /// that decode it.
    pub fn into_contiguous(self) -> Bytes {
        match self {
            ResponseFrame::Contiguous(bytes) => bytes,
            ResponseFrame::Scattered(segments) => segments.concat().into(),
            ResponseFrame::Close => Bytes::new(),
        }
    }
}

/// A ready response future holding the encoded `response` (on the heap).
pub fn encode(correlation_id: i32, api_version: i16, response: Response) -> PendingResponse {
    futures::future::ready(
        encode_to_heap(correlation_id, api_version, &response).map(ResponseFrame::Contiguous),
    )
    .boxed_local()
}

/// What a request ends in: for a produce with `acks_zero` (acks=0), nothing, or
/// [`ResponseFrame::Close`] when one of its partitions failed (Kafka's
/// `KafkaApis.handleProduceRequest`); else the encoded `response`, as [`encode_frame`] does.
pub fn reply(
    pool: &ChunkPool,
    correlation_id: i32,
    api_version: i16,
    response: &Response,
    acks_zero: bool,
) -> Option<ResponseFrame> {
    match response {
        Response::Produce(produce) if acks_zero => produce
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .any(|p| p.error_code != 0)
            .then_some(ResponseFrame::Close),
        _ => encode_frame(pool, correlation_id, api_version, response),
    }
}

/// The encoded `response`: a fetch scattered (its records are not copied), any other response
/// as [`encode_pooled`] does.
pub fn encode_frame(
    pool: &ChunkPool,
    correlation_id: i32,
    api_version: i16,
    response: &Response,
) -> Option<ResponseFrame> {
    if !matches!(response, Response::Fetch(_)) {
        return encode_pooled(pool, correlation_id, api_version, response)
            .map(ResponseFrame::Contiguous);
    }
    match sluice_net::encode_response_scattered(correlation_id, api_version, response) {
        Ok(segments) => Some(ResponseFrame::Scattered(segments)),
        Err(error) => {
            tracing::error!(%error, "response could not be encoded");
            None
        }
    }
}

/// The encoded `response`, in a chunk of `pool` when it is large and the pool has room.
/// Not for a fetch: [`encode_frame`] sends its records without this copy.
///
/// Why: a large heap buffer is a fresh mmap (the broker caps glibc's mmap threshold), whose
/// pages fault in one by one as the records are copied; a fetch at 1 GB/s spent a quarter of
/// its shard's time in those faults. The pool's memory is mapped already and counted in the
/// budget. A short pool never makes a response wait: it falls back to the heap.
fn encode_pooled(
    pool: &ChunkPool,
    correlation_id: i32,
    api_version: i16,
    response: &Response,
) -> Option<Bytes> {
    let len = match sluice_net::response_frame_len(api_version, response) {
        Ok(len) => len,
        Err(error) => {
            tracing::error!(%error, "response could not be encoded");
            return None;
        }
    };
    let chunk = (len >= POOLED_RESPONSE_BYTES_MIN)
        .then(|| pool.try_take(len))
        .flatten();
    let Some(mut chunk) = chunk else {
        return encode_to_heap(correlation_id, api_version, response);
    };
    let mut out: &mut [u8] = chunk.as_mut();
    match sluice_net::encode_response_to(correlation_id, api_version, response, len, &mut out) {
        Ok(()) if out.is_empty() => Some(chunk.freeze()),
        Ok(()) => {
            tracing::error!(
                unwritten = out.len(),
                "response shorter than its encoded length"
            );
            None
        }
        Err(error) => {
            tracing::error!(%error, "response could not be encoded");
            None
        }
    }
}

fn encode_to_heap(correlation_id: i32, api_version: i16, response: &Response) -> Option<Bytes> {
    let mut out = BytesMut::new();
    match sluice_net::encode_response(correlation_id, api_version, response, &mut out) {
        Ok(()) => {
            tracing::trace!(correlation_id, bytes = out.len(), "response");
            Some(out.freeze())
        }
        Err(error) => {
            tracing::error!(%error, "response could not be encoded");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(keys: usize) -> Response {
        let mut response = crate::api::api_versions::handle();
        let first = response.api_keys[0].clone();
        response.api_keys.resize(keys, first);
        Response::ApiVersions(response)
    }

    #[test]
    fn a_fetch_is_scattered_sharing_its_records_and_other_responses_are_contiguous() {
        use sluice_net::messages::fetch_response::{
            FetchResponse, FetchableTopicResponse, PartitionData,
        };
        let pool = ChunkPool::new(8 << 20);
        let records = Bytes::from(vec![5u8; 1 << 20]);
        let fetch = Response::Fetch(FetchResponse {
            responses: vec![FetchableTopicResponse {
                topic: "t".into(),
                partitions: vec![PartitionData {
                    records: Some(records.clone()),
                    ..PartitionData::default()
                }],
                ..FetchableTopicResponse::default()
            }],
            ..FetchResponse::default()
        });
        for version in [4, 11, 12, 16] {
            let frame = encode_frame(&pool, 7, version, &fetch).expect("encodes");
            assert!(
                frame
                    .segments()
                    .iter()
                    .any(|s| s.as_ptr() == records.as_ptr() && s.len() == records.len()),
                "v{version}: the records are shared, not copied"
            );
            let heap = encode_to_heap(7, version, &fetch).expect("encodes");
            assert_eq!(frame.into_contiguous(), heap, "v{version}");
        }
        let other = encode_frame(&pool, 7, 3, &response(1)).expect("encodes");
        assert!(matches!(other, ResponseFrame::Contiguous(_)));
    }

    #[test]
    fn large_responses_go_to_the_pool_and_encode_as_on_the_heap() {
        let pool = ChunkPool::new(8 << 20);
        for keys in [1, 20_000] {
            let response = response(keys);
            let heap = encode_to_heap(7, 3, &response).expect("encodes");
            let pooled = encode_pooled(&pool, 7, 3, &response).expect("encodes");
            assert_eq!(heap, pooled, "{keys} api keys");
            assert_eq!(heap.len() >= POOLED_RESPONSE_BYTES_MIN, keys > 1);
        }
        // A pool without room falls back to the heap instead of waiting.
        let tiny = ChunkPool::new(4096);
        let response = response(20_000);
        assert!(encode_pooled(&tiny, 7, 3, &response).is_some());
    }
}
