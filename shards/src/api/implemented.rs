//! The Kafka APIs this broker answers, and at which versions: ApiVersions advertises exactly
//! these, the connection refuses others, and the metrics keep a series for each.

use sluice_net::ApiKey;

/// The APIs this broker answers; ApiVersions advertises exactly these.
pub const IMPLEMENTED_APIS: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::DeleteRecords,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeCluster,
    ApiKey::DescribeQuorum,
    ApiKey::DescribeLogDirs,
    ApiKey::ElectLeaders,
    ApiKey::AlterPartitionReassignments,
    ApiKey::ListPartitionReassignments,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::AlterUserScramCredentials,
    ApiKey::DescribeAcls,
    ApiKey::CreateAcls,
    ApiKey::DeleteAcls,
    ApiKey::DescribeClientQuotas,
    ApiKey::AlterClientQuotas,
    ApiKey::InitProducerId,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::EndTxn,
    ApiKey::TxnOffsetCommit,
    ApiKey::WriteTxnMarkers,
    ApiKey::DescribeProducers,
    ApiKey::DescribeTransactions,
    ApiKey::ListTransactions,
    ApiKey::ConsumerGroupHeartbeat,
    ApiKey::ConsumerGroupDescribe,
];

/// Versions the codec decodes but the broker does not serve, as (api, lowest, highest
/// served). Produce v0–2 and Fetch v0–3 carry message formats v0 and v1, which Sluice neither
/// stores nor converts (Kafka 4 dropped those versions too); EndTxn v5 is transaction version
/// 2 (KIP-890: the broker bumps the epoch at each commit), which Sluice does not implement.
const SERVED_VERSION_LIMITS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, i16::MAX),
    (ApiKey::Fetch, 4, i16::MAX),
    (ApiKey::EndTxn, 0, 4),
];

/// True when this broker serves `api` at `version`.
pub fn serves(api: ApiKey, version: i16) -> bool {
    served_versions(api).is_some_and(|(lowest, highest)| (lowest..=highest).contains(&version))
}

/// (lowest, highest) version of `api` this broker serves; None for an API it does not serve.
pub fn served_versions(api: ApiKey) -> Option<(i16, i16)> {
    if !IMPLEMENTED_APIS.contains(&api) {
        return None;
    }
    let mut served = (api.min_version(), api.max_version());
    for &(limited, lowest, highest) in SERVED_VERSION_LIMITS {
        if limited == api {
            served = (served.0.max(lowest), served.1.min(highest));
        }
    }
    Some(served)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_message_formats_and_transaction_version_2_are_not_served() {
        assert_eq!(served_versions(ApiKey::Produce).map(|v| v.0), Some(3));
        assert_eq!(served_versions(ApiKey::Fetch).map(|v| v.0), Some(4));
        assert_eq!(served_versions(ApiKey::EndTxn), Some((0, 4)));
        assert_eq!(
            served_versions(ApiKey::Metadata),
            Some((
                ApiKey::Metadata.min_version(),
                ApiKey::Metadata.max_version()
            ))
        );
        // Kafka 3.9 serves OffsetForLeaderEpoch v0–4 to clients (v0–1 deprecated).
        assert_eq!(served_versions(ApiKey::OffsetForLeaderEpoch), Some((0, 4)));
        for &(api, _, _) in SERVED_VERSION_LIMITS {
            let (lowest, highest) = served_versions(api).expect("served");
            assert!(lowest <= highest, "{api:?} keeps a version");
        }
    }
}
