//! Whole frames: size prefix, request / response headers, and the
//! header-version rules, checked against kafka-protocol for every API and
//! version it shares with us.

mod common;

use bytes::{Buf, BytesMut};
use common::Rng;
use kafka_protocol::messages::{
    ApiKey as KpApiKey, RequestHeader as KpRequestHeader, ResponseHeader as KpResponseHeader,
};
use kafka_protocol::protocol::Decodable;
use sluice_net::messages::api_versions_response::ApiVersionsResponse;
use sluice_net::{
    ApiKey, RequestHeader, Response, ResponseHeader, decode_request, decode_response,
    encode_request, encode_response, encode_response_scattered,
};

macro_rules! random_message {
    ($fn:ident, $enum:ident, $($variant:ident => $module:ident),* $(,)?) => {
        fn $fn(rng: &mut Rng, key: ApiKey, version: i16) -> sluice_net::$enum {
            match key {
                $(ApiKey::$variant => sluice_net::$enum::$variant(common::random::$module::random(rng, version)),)*
            }
        }
    };
}

random_message! { random_response, Response,
    Produce => produce_response, Fetch => fetch_response, ListOffsets => list_offsets_response,
    Metadata => metadata_response, OffsetCommit => offset_commit_response,
    OffsetFetch => offset_fetch_response, FindCoordinator => find_coordinator_response,
    JoinGroup => join_group_response, Heartbeat => heartbeat_response,
    LeaveGroup => leave_group_response, SyncGroup => sync_group_response,
    DescribeGroups => describe_groups_response, ListGroups => list_groups_response,
    SaslHandshake => sasl_handshake_response, ApiVersions => api_versions_response,
    CreateTopics => create_topics_response, DeleteTopics => delete_topics_response,
    DeleteRecords => delete_records_response, InitProducerId => init_producer_id_response,
    OffsetForLeaderEpoch => offset_for_leader_epoch_response,
    AddPartitionsToTxn => add_partitions_to_txn_response,
    AddOffsetsToTxn => add_offsets_to_txn_response, EndTxn => end_txn_response,
    WriteTxnMarkers => write_txn_markers_response, TxnOffsetCommit => txn_offset_commit_response,
    DescribeConfigs => describe_configs_response, AlterConfigs => alter_configs_response,
    DescribeLogDirs => describe_log_dirs_response, SaslAuthenticate => sasl_authenticate_response,
    CreatePartitions => create_partitions_response, DeleteGroups => delete_groups_response,
    IncrementalAlterConfigs => incremental_alter_configs_response,
    OffsetDelete => offset_delete_response, DescribeCluster => describe_cluster_response,
    DescribeQuorum => describe_quorum_response,
    DescribeProducers => describe_producers_response,
    DescribeTransactions => describe_transactions_response,
    ListTransactions => list_transactions_response,
    ConsumerGroupHeartbeat => consumer_group_heartbeat_response,
    ConsumerGroupDescribe => consumer_group_describe_response,
    ElectLeaders => elect_leaders_response,
    AlterPartitionReassignments => alter_partition_reassignments_response,
    ListPartitionReassignments => list_partition_reassignments_response,
    DescribeUserScramCredentials => describe_user_scram_credentials_response,
    AlterUserScramCredentials => alter_user_scram_credentials_response,
    DescribeAcls => describe_acls_response,
    CreateAcls => create_acls_response,
    DeleteAcls => delete_acls_response,
    DescribeClientQuotas => describe_client_quotas_response,
    AlterClientQuotas => alter_client_quotas_response,
}

random_message! { random_request, Request,
    Produce => produce_request, Fetch => fetch_request, ListOffsets => list_offsets_request,
    Metadata => metadata_request, OffsetCommit => offset_commit_request,
    OffsetFetch => offset_fetch_request, FindCoordinator => find_coordinator_request,
    JoinGroup => join_group_request, Heartbeat => heartbeat_request,
    LeaveGroup => leave_group_request, SyncGroup => sync_group_request,
    DescribeGroups => describe_groups_request, ListGroups => list_groups_request,
    SaslHandshake => sasl_handshake_request, ApiVersions => api_versions_request,
    CreateTopics => create_topics_request, DeleteTopics => delete_topics_request,
    DeleteRecords => delete_records_request, InitProducerId => init_producer_id_request,
    OffsetForLeaderEpoch => offset_for_leader_epoch_request,
    AddPartitionsToTxn => add_partitions_to_txn_request,
    AddOffsetsToTxn => add_offsets_to_txn_request, EndTxn => end_txn_request,
    WriteTxnMarkers => write_txn_markers_request, TxnOffsetCommit => txn_offset_commit_request,
    DescribeConfigs => describe_configs_request, AlterConfigs => alter_configs_request,
    DescribeLogDirs => describe_log_dirs_request, SaslAuthenticate => sasl_authenticate_request,
    CreatePartitions => create_partitions_request, DeleteGroups => delete_groups_request,
    IncrementalAlterConfigs => incremental_alter_configs_request,
    OffsetDelete => offset_delete_request, DescribeCluster => describe_cluster_request,
    DescribeQuorum => describe_quorum_request,
    DescribeProducers => describe_producers_request,
    DescribeTransactions => describe_transactions_request,
    ListTransactions => list_transactions_request,
    ConsumerGroupHeartbeat => consumer_group_heartbeat_request,
    ConsumerGroupDescribe => consumer_group_describe_request,
    ElectLeaders => elect_leaders_request,
    AlterPartitionReassignments => alter_partition_reassignments_request,
    ListPartitionReassignments => list_partition_reassignments_request,
    DescribeUserScramCredentials => describe_user_scram_credentials_request,
    AlterUserScramCredentials => alter_user_scram_credentials_request,
    DescribeAcls => describe_acls_request,
    CreateAcls => create_acls_request,
    DeleteAcls => delete_acls_request,
    DescribeClientQuotas => describe_client_quotas_request,
    AlterClientQuotas => alter_client_quotas_request,
}

#[test]
fn request_and_response_frames_for_every_api_version() {
    let mut frames = 0;
    for &(key, lo, hi) in sluice_net::supported_apis() {
        let kp_key = KpApiKey::try_from(key as i16).expect("kafka-protocol knows every key we do");
        for version in lo..=hi {
            let mut rng = Rng::new((key as u64) << 16 | version as u64);
            // Request frame.
            let header = RequestHeader {
                request_api_key: key as i16,
                request_api_version: version,
                correlation_id: rng.i32(),
                client_id: Some(rng.string()),
            };
            let request = random_request(&mut rng, key, version);
            let mut out = BytesMut::new();
            encode_request(&header, &request, &mut out).expect("encode request");
            let mut frame = out.freeze();
            assert_eq!(
                frame.get_i32() as usize,
                frame.len(),
                "{key:?} v{version}: size prefix"
            );
            let (h, r) = decode_request(frame.clone()).expect("decode request");
            assert_eq!((&h, &r), (&header, &request));
            let hv = RequestHeader::header_version(key, version);
            let kp_range = kp_key.valid_versions();
            if version >= kp_range.min && version <= kp_range.max {
                assert_eq!(
                    hv,
                    kp_key.request_header_version(version),
                    "{key:?} v{version}: request header version"
                );
            }
            let kh = KpRequestHeader::decode(&mut frame.clone(), hv).expect("kp header");
            assert_eq!(kh.correlation_id, header.correlation_id);
            assert_eq!(kh.request_api_version, version);
            assert_eq!(
                kh.client_id.as_ref().map(|s| s.to_string()),
                header.client_id
            );

            // Response frame.
            let correlation_id = rng.i32();
            let response = random_response(&mut rng, key, version);
            let mut out = BytesMut::new();
            encode_response(correlation_id, version, &response, &mut out).expect("encode response");
            let scattered = encode_response_scattered(correlation_id, version, &response)
                .expect("encode response scattered");
            assert_eq!(
                scattered.concat(),
                out[..],
                "{key:?} v{version}: scattered frame"
            );
            let mut frame = out.freeze();
            assert_eq!(frame.get_i32() as usize, frame.len());
            let hv = ResponseHeader::header_version(key, version);
            if version >= kp_range.min && version <= kp_range.max {
                assert_eq!(
                    hv,
                    kp_key.response_header_version(version),
                    "{key:?} v{version}: response header version"
                );
            }
            let kh = KpResponseHeader::decode(&mut frame.clone(), hv).expect("kp response header");
            assert_eq!(kh.correlation_id, correlation_id);
            let (c, back) = decode_response(key as i16, version, frame).expect("decode response");
            assert_eq!((c, &back), (correlation_id, &response));
            frames += 2;
        }
    }
    println!("{frames} request/response frames checked");
}

#[test]
fn api_versions_response_header_is_always_v0() {
    let response = Response::ApiVersions(ApiVersionsResponse::default());
    let mut out = BytesMut::new();
    encode_response(9, 3, &response, &mut out).unwrap();
    // size, correlation id, then the body starts right away (no tagged-field byte):
    // error code 0 (int16), then a compact array of 0 api keys (uvarint 1).
    assert_eq!(&out[4..8], &9i32.to_be_bytes());
    assert_eq!(&out[8..11], &[0, 0, 1]);
}
