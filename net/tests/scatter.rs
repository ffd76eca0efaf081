//! `encode_response_scattered`: the segments of a fetch response concatenate to the frame
//! `encode_response` writes, and large records are the response's own `Bytes`, not copies.

use bytes::{Bytes, BytesMut};
use sluice_net::messages::fetch_response::{FetchResponse, FetchableTopicResponse, PartitionData};
use sluice_net::{
    Response, SHARED_SEGMENT_BYTES_MIN, Uuid, encode_response, encode_response_scattered,
};

/// A fetch response with one topic per entry of `topics`, each with partitions carrying
/// those records.
fn fetch(topics: &[Vec<Option<Bytes>>]) -> FetchResponse {
    FetchResponse {
        responses: topics
            .iter()
            .enumerate()
            .map(|(t, partitions)| FetchableTopicResponse {
                topic: format!("topic-{t}"),
                topic_id: Uuid([t as u8; 16]),
                partitions: partitions
                    .iter()
                    .enumerate()
                    .map(|(p, records)| PartitionData {
                        partition_index: p as i32,
                        high_watermark: 1000 + p as i64,
                        records: records.clone(),
                        ..PartitionData::default()
                    })
                    .collect(),
            })
            .collect(),
        ..FetchResponse::default()
    }
}

fn records(len: usize, fill: u8) -> Option<Bytes> {
    Some(Bytes::from(vec![fill; len]))
}

/// Checks every version the fetch supports, flexible (12+) and not; returns the segments of
/// the newest version.
fn check_every_version(response: &FetchResponse, shape: &str) -> Vec<Bytes> {
    let response = Response::Fetch(response.clone());
    let mut newest = Vec::new();
    for version in 4..=17 {
        let mut contiguous = BytesMut::new();
        encode_response(42, version, &response, &mut contiguous).expect("encodes");
        let segments = encode_response_scattered(42, version, &response).expect("encodes");
        assert_eq!(segments.concat(), contiguous[..], "{shape} v{version}");
        assert!(segments.iter().all(|s| !s.is_empty()), "{shape} v{version}");
        newest = segments;
    }
    newest
}

/// Whether `segment` is `original`'s memory (shared), not a copy of its bytes.
fn same_memory(segment: &Bytes, original: &Option<Bytes>) -> bool {
    original
        .as_ref()
        .is_some_and(|o| o.as_ptr() == segment.as_ptr() && o.len() == segment.len())
}

#[test]
fn no_partitions_is_one_segment() {
    let segments = check_every_version(&fetch(&[]), "no topics");
    assert_eq!(segments.len(), 1);
    let segments = check_every_version(&fetch(&[vec![]]), "a topic without partitions");
    assert_eq!(segments.len(), 1);
}

#[test]
fn null_and_small_records_are_copied_inline() {
    let small = SHARED_SEGMENT_BYTES_MIN - 1;
    let response = fetch(&[vec![None, records(0, 0), records(10, 1), records(small, 2)]]);
    let segments = check_every_version(&response, "null and small records");
    assert_eq!(segments.len(), 1, "everything inline");
}

#[test]
fn large_records_are_their_own_segment_sharing_memory() {
    let large = records(SHARED_SEGMENT_BYTES_MIN, 3);
    let response = fetch(&[vec![large.clone()]]);
    let segments = check_every_version(&response, "one large records");
    // Header and partition fields, the records, then the closing fields.
    assert_eq!(segments.len(), 3);
    assert!(same_memory(&segments[1], &large));
}

#[test]
fn many_partitions_mixing_sizes_share_every_large_records() {
    let mut partitions = Vec::new();
    for p in 0..300usize {
        partitions.push(match p % 4 {
            0 => None,
            1 => records(p, p as u8),
            _ => records(SHARED_SEGMENT_BYTES_MIN + p * 7, p as u8),
        });
    }
    let response = fetch(&[partitions.clone(), partitions[..10].to_vec()]);
    let segments = check_every_version(&response, "many partitions");
    let large: Vec<&Option<Bytes>> = response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| &p.records))
        .filter(|r| {
            r.as_ref()
                .is_some_and(|r| r.len() >= SHARED_SEGMENT_BYTES_MIN)
        })
        .collect();
    let shared: Vec<&Bytes> = segments
        .iter()
        .filter(|s| s.len() >= SHARED_SEGMENT_BYTES_MIN)
        .collect();
    assert_eq!(shared.len(), large.len());
    for (segment, original) in shared.iter().zip(&large) {
        assert!(same_memory(segment, original));
    }
    // Inline pieces only between shared ones: never two inline segments in a row.
    assert_eq!(segments.len(), 2 * large.len() + 1);
}
