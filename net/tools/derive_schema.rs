//! Regenerates net/schema/*.schema from Kafka's JSON message specs.
//!
//! Usage (from the workspace root):
//! `cargo run -p sluice-net --example derive_schema -- ../shared/kafka-message-specs net/schema`

#[path = "derive.rs"]
mod derive;

/// The APIs Sluice advertises (Kafka names without `Request`/`Response`).
const APIS: &[&str] = &[
    "Produce",
    "Fetch",
    "ListOffsets",
    "Metadata",
    "OffsetCommit",
    "OffsetFetch",
    "FindCoordinator",
    "JoinGroup",
    "Heartbeat",
    "LeaveGroup",
    "SyncGroup",
    "DescribeGroups",
    "ListGroups",
    "SaslHandshake",
    "ApiVersions",
    "CreateTopics",
    "DeleteTopics",
    "DeleteRecords",
    "InitProducerId",
    "OffsetForLeaderEpoch",
    "AddPartitionsToTxn",
    "AddOffsetsToTxn",
    "EndTxn",
    "WriteTxnMarkers",
    "TxnOffsetCommit",
    "DescribeConfigs",
    "AlterConfigs",
    "DescribeLogDirs",
    "SaslAuthenticate",
    "CreatePartitions",
    "DeleteGroups",
    "IncrementalAlterConfigs",
    "OffsetDelete",
    "DescribeQuorum",
    "DescribeCluster",
    "DescribeProducers",
    "DescribeTransactions",
    "ListTransactions",
    "ConsumerGroupHeartbeat",
    "ConsumerGroupDescribe",
    "ElectLeaders",
    "AlterPartitionReassignments",
    "ListPartitionReassignments",
    "DescribeUserScramCredentials",
    "AlterUserScramCredentials",
    "DescribeAcls",
    "CreateAcls",
    "DeleteAcls",
    "DescribeClientQuotas",
    "AlterClientQuotas",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: derive_schema <kafka-message-specs dir> <out dir>");
        std::process::exit(2);
    }
    let (specs, out) = (&args[1], &args[2]);
    for api in APIS {
        for side in ["Request", "Response"] {
            let name = format!("{api}{side}");
            let path = format!("{specs}/{}", derive::json_file_name(&name));
            let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let schema = derive::derive_schema(&json).unwrap_or_else(|e| panic!("{path}: {e}"));
            let dest = format!("{out}/{name}.schema");
            std::fs::write(&dest, schema).unwrap_or_else(|e| panic!("{dest}: {e}"));
        }
    }
    eprintln!("wrote {} schema files to {out}", APIS.len() * 2);
}
