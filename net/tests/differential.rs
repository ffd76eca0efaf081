//! Differential tests against the `kafka-protocol` crate (dev-dependency only).
//!
//! For every API and every version we advertise, seeded random values are
//! encoded by `sluice_net`, decoded back by `sluice_net` (must be equal), and —
//! where kafka-protocol supports the version (it follows Kafka 4.x, which
//! dropped some old versions) — decoded by kafka-protocol, re-encoded by
//! kafka-protocol (bytes must be identical) and decoded again by
//! `sluice_net` (must equal the original value). kafka-protocol is only ever
//! given bytes we encoded (it aborts on hostile array counts).
//!
//! `SLUICE_DIFF_CASES` sets the cases per version (default 40); the seed of a
//! failing case is printed.

mod common;

use bytes::{Bytes, BytesMut};
use common::Rng;
use kafka_protocol::protocol::{Decodable as KpDecodable, Encodable as KpEncodable, Message};
use sluice_net::{Decode, Encode};

struct Tally {
    ours: usize,
    kp: usize,
    versions_ours: usize,
    versions_kp: usize,
    skipped: Vec<String>,
}

fn cases() -> u64 {
    std::env::var("SLUICE_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

macro_rules! diff_all {
    ($($module:ident, $name:ident;)*) => {
        fn run_all(t: &mut Tally) {
            $( {
                use sluice_net::messages::$module::$name as Ours;
                use kafka_protocol::messages::$module::$name as Theirs;
                let kp = <Theirs as Message>::VERSIONS;
                for version in Ours::MIN_VERSION..=Ours::MAX_VERSION {
                    let with_kp = version >= kp.min && version <= kp.max;
                    t.versions_ours += 1;
                    if with_kp { t.versions_kp += 1; } else {
                        t.skipped.push(format!("{} v{}", stringify!($name), version));
                    }
                    for case in 0..cases() {
                        let seed = (Ours::API_KEY as u64) << 40 | (version as u64) << 24 | case
                            | if stringify!($module).ends_with("response") { 1 << 56 } else { 0 };
                        let mut rng = Rng::new(seed);
                        let value = common::random::$module::random(&mut rng, version);
                        check::<Ours, Theirs>(&value, version, with_kp, seed, stringify!($name));
                        t.ours += 1;
                        if with_kp { t.kp += 1; }
                    }
                }
            } )*
        }
    };
}

static BYTES_CHECKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn check<O, T>(value: &O, version: i16, with_kp: bool, seed: u64, name: &str)
where
    O: Encode + Decode + PartialEq + std::fmt::Debug,
    T: KpEncodable + KpDecodable,
{
    let ctx = format!("{name} v{version} seed {seed:#x}");
    let mut buf = BytesMut::new();
    value
        .encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("{ctx}: encode: {e}"));
    assert_eq!(buf.len(), value.encoded_len(version), "{ctx}: encoded_len");
    let ours = buf.freeze();
    BYTES_CHECKED.fetch_add(ours.len(), std::sync::atomic::Ordering::Relaxed);
    let mut b = ours.clone();
    let back = O::decode(&mut b, version).unwrap_or_else(|e| panic!("{ctx}: decode: {e}"));
    assert!(b.is_empty(), "{ctx}: {} bytes left", b.len());
    assert_eq!(&back, value, "{ctx}: our round trip");
    if !with_kp {
        return;
    }
    let mut b = ours.clone();
    let theirs =
        T::decode(&mut b, version).unwrap_or_else(|e| panic!("{ctx}: kafka-protocol decode: {e}"));
    assert!(b.is_empty(), "{ctx}: kafka-protocol left {} bytes", b.len());
    let mut kb = BytesMut::new();
    theirs
        .encode(&mut kb, version)
        .unwrap_or_else(|e| panic!("{ctx}: kafka-protocol encode: {e}"));
    assert_eq!(
        theirs.compute_size(version).ok(),
        Some(kb.len()),
        "{ctx}: kp size"
    );
    let kb: Bytes = kb.freeze();
    assert_eq!(kb, ours, "{ctx}: kafka-protocol re-encoding differs");
    let mut b = kb.clone();
    let from_kp =
        O::decode(&mut b, version).unwrap_or_else(|e| panic!("{ctx}: decode kp bytes: {e}"));
    assert_eq!(
        &from_kp, value,
        "{ctx}: kafka-protocol bytes decode differently"
    );
}

diff_all! {
    add_offsets_to_txn_request, AddOffsetsToTxnRequest;
    add_offsets_to_txn_response, AddOffsetsToTxnResponse;
    add_partitions_to_txn_request, AddPartitionsToTxnRequest;
    add_partitions_to_txn_response, AddPartitionsToTxnResponse;
    alter_configs_request, AlterConfigsRequest;
    alter_partition_reassignments_request, AlterPartitionReassignmentsRequest;
    alter_partition_reassignments_response, AlterPartitionReassignmentsResponse;
    alter_configs_response, AlterConfigsResponse;
    alter_user_scram_credentials_request, AlterUserScramCredentialsRequest;
    alter_user_scram_credentials_response, AlterUserScramCredentialsResponse;
    api_versions_request, ApiVersionsRequest;
    api_versions_response, ApiVersionsResponse;
    consumer_group_describe_request, ConsumerGroupDescribeRequest;
    consumer_group_describe_response, ConsumerGroupDescribeResponse;
    consumer_group_heartbeat_request, ConsumerGroupHeartbeatRequest;
    consumer_group_heartbeat_response, ConsumerGroupHeartbeatResponse;
    create_partitions_request, CreatePartitionsRequest;
    create_partitions_response, CreatePartitionsResponse;
    create_topics_request, CreateTopicsRequest;
    create_topics_response, CreateTopicsResponse;
    delete_groups_request, DeleteGroupsRequest;
    delete_groups_response, DeleteGroupsResponse;
    delete_records_request, DeleteRecordsRequest;
    delete_records_response, DeleteRecordsResponse;
    delete_topics_request, DeleteTopicsRequest;
    delete_topics_response, DeleteTopicsResponse;
    describe_cluster_request, DescribeClusterRequest;
    describe_cluster_response, DescribeClusterResponse;
    describe_configs_request, DescribeConfigsRequest;
    describe_configs_response, DescribeConfigsResponse;
    describe_groups_request, DescribeGroupsRequest;
    describe_groups_response, DescribeGroupsResponse;
    describe_log_dirs_request, DescribeLogDirsRequest;
    describe_log_dirs_response, DescribeLogDirsResponse;
    describe_quorum_request, DescribeQuorumRequest;
    describe_quorum_response, DescribeQuorumResponse;
    describe_producers_request, DescribeProducersRequest;
    describe_producers_response, DescribeProducersResponse;
    describe_transactions_request, DescribeTransactionsRequest;
    describe_transactions_response, DescribeTransactionsResponse;
    describe_user_scram_credentials_request, DescribeUserScramCredentialsRequest;
    describe_user_scram_credentials_response, DescribeUserScramCredentialsResponse;
    describe_acls_request, DescribeAclsRequest;
    describe_acls_response, DescribeAclsResponse;
    create_acls_request, CreateAclsRequest;
    create_acls_response, CreateAclsResponse;
    delete_acls_request, DeleteAclsRequest;
    delete_acls_response, DeleteAclsResponse;
    describe_client_quotas_request, DescribeClientQuotasRequest;
    describe_client_quotas_response, DescribeClientQuotasResponse;
    alter_client_quotas_request, AlterClientQuotasRequest;
    alter_client_quotas_response, AlterClientQuotasResponse;
    elect_leaders_request, ElectLeadersRequest;
    elect_leaders_response, ElectLeadersResponse;
    end_txn_request, EndTxnRequest;
    end_txn_response, EndTxnResponse;
    fetch_request, FetchRequest;
    fetch_response, FetchResponse;
    find_coordinator_request, FindCoordinatorRequest;
    find_coordinator_response, FindCoordinatorResponse;
    heartbeat_request, HeartbeatRequest;
    heartbeat_response, HeartbeatResponse;
    incremental_alter_configs_request, IncrementalAlterConfigsRequest;
    incremental_alter_configs_response, IncrementalAlterConfigsResponse;
    init_producer_id_request, InitProducerIdRequest;
    init_producer_id_response, InitProducerIdResponse;
    join_group_request, JoinGroupRequest;
    join_group_response, JoinGroupResponse;
    list_partition_reassignments_request, ListPartitionReassignmentsRequest;
    list_partition_reassignments_response, ListPartitionReassignmentsResponse;
    leave_group_request, LeaveGroupRequest;
    leave_group_response, LeaveGroupResponse;
    list_groups_request, ListGroupsRequest;
    list_groups_response, ListGroupsResponse;
    list_offsets_request, ListOffsetsRequest;
    list_offsets_response, ListOffsetsResponse;
    list_transactions_request, ListTransactionsRequest;
    list_transactions_response, ListTransactionsResponse;
    metadata_request, MetadataRequest;
    metadata_response, MetadataResponse;
    offset_commit_request, OffsetCommitRequest;
    offset_commit_response, OffsetCommitResponse;
    offset_delete_request, OffsetDeleteRequest;
    offset_delete_response, OffsetDeleteResponse;
    offset_fetch_request, OffsetFetchRequest;
    offset_fetch_response, OffsetFetchResponse;
    offset_for_leader_epoch_request, OffsetForLeaderEpochRequest;
    offset_for_leader_epoch_response, OffsetForLeaderEpochResponse;
    produce_request, ProduceRequest;
    produce_response, ProduceResponse;
    sasl_authenticate_request, SaslAuthenticateRequest;
    sasl_authenticate_response, SaslAuthenticateResponse;
    sasl_handshake_request, SaslHandshakeRequest;
    sasl_handshake_response, SaslHandshakeResponse;
    sync_group_request, SyncGroupRequest;
    sync_group_response, SyncGroupResponse;
    txn_offset_commit_request, TxnOffsetCommitRequest;
    txn_offset_commit_response, TxnOffsetCommitResponse;
    write_txn_markers_request, WriteTxnMarkersRequest;
    write_txn_markers_response, WriteTxnMarkersResponse;
}

#[test]
fn every_api_every_version_matches_kafka_protocol() {
    let mut t = Tally {
        ours: 0,
        kp: 0,
        versions_ours: 0,
        versions_kp: 0,
        skipped: Vec::new(),
    };
    run_all(&mut t);
    println!(
        "differential: {} message versions ({} also in kafka-protocol); {} cases round-tripped, {} cross-checked with kafka-protocol; {} encoded bytes",
        t.versions_ours,
        t.versions_kp,
        t.ours,
        t.kp,
        BYTES_CHECKED.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "not in kafka-protocol 0.18 (Kafka 4.x dropped them): {}",
        t.skipped.join(", ")
    );
    assert_eq!(
        t.versions_ours,
        sluice_net::supported_apis()
            .iter()
            .map(|(_, lo, hi)| 2 * (hi - lo + 1) as usize)
            .sum::<usize>()
    );
}
