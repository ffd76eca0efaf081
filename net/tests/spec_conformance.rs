//! Checks every API and version we advertise against Kafka's own JSON message
//! definitions (`../shared/kafka-message-specs`, present in CI), field by
//! field: the committed net/schema/*.schema must be exactly what
//! net/tools/derive.rs derives from the JSON, and `supported_apis()` must
//! match each request's and response's `validVersions`.
//!
//! Fails, saying where it looked, when the specs folder is absent: a missing
//! folder must not pass as a checked schema. Override its path with
//! `SLUICE_KAFKA_SPECS`.

#[path = "../tools/derive.rs"]
mod derive;

use std::path::PathBuf;

/// The folder of Kafka's JSON message definitions; panics, naming where it looked, when it
/// is not there.
fn specs_dir() -> PathBuf {
    let (dir, from) = match std::env::var_os("SLUICE_KAFKA_SPECS") {
        Some(dir) => (PathBuf::from(dir), "SLUICE_KAFKA_SPECS"),
        None => (
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/kafka-message-specs"),
            "the default, ../shared/kafka-message-specs beside the repository",
        ),
    };
    assert!(
        dir.is_dir(),
        "Kafka's message specs are missing: looked in {} ({from}); put Kafka's \
         clients/src/main/resources/common/message/*.json there or set SLUICE_KAFKA_SPECS",
        dir.display()
    );
    dir
}

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema")
}

#[test]
fn committed_schema_matches_kafka_json_field_by_field() {
    let specs = specs_dir();
    let mut problems = Vec::new();
    let mut fields_checked = 0;
    for (api, lo, hi) in sluice_net::supported_apis() {
        for side in ["Request", "Response"] {
            let name = format!("{}{side}", api.name());
            let json_path = specs.join(derive::json_file_name(&name));
            let json = std::fs::read_to_string(&json_path)
                .unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
            let expected = derive::derive_schema(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
            let committed = std::fs::read_to_string(schema_dir().join(format!("{name}.schema")))
                .unwrap_or_else(|e| panic!("{name}.schema: {e}"));
            let (exp, got): (Vec<&str>, Vec<&str>) =
                (expected.lines().collect(), committed.lines().collect());
            for i in 0..exp.len().max(got.len()) {
                let (e, g) = (exp.get(i).copied(), got.get(i).copied());
                if e != g {
                    problems.push(format!(
                        "{name}.schema line {}: JSON says {e:?}, committed {g:?}",
                        i + 1
                    ));
                }
            }
            fields_checked += exp.iter().filter(|l| l.starts_with("field ")).count();
            // Advertised range = validVersions.
            let message_line = exp
                .iter()
                .find(|l| l.starts_with("message "))
                .expect("message line");
            let valid = message_line
                .split_whitespace()
                .find_map(|t| t.strip_prefix("valid="))
                .expect("valid=");
            let (jlo, jhi) = match valid.split_once('-') {
                Some((a, b)) => (a.parse::<i16>().unwrap(), b.parse::<i16>().unwrap()),
                None => (valid.parse().unwrap(), valid.parse().unwrap()),
            };
            if (jlo, jhi) != (*lo, *hi) {
                problems.push(format!(
                    "{name}: advertised {lo}-{hi}, JSON validVersions {valid}"
                ));
            }
        }
    }
    let files = std::fs::read_dir(schema_dir()).unwrap().count();
    if files != 2 * sluice_net::supported_apis().len() {
        problems.push(format!(
            "{files} files in net/schema, expected {}",
            2 * sluice_net::supported_apis().len()
        ));
    }
    assert!(
        problems.is_empty(),
        "schema drifted from Kafka's JSON:\n{}",
        problems.join("\n")
    );
    println!(
        "spec conformance: {} APIs, {} fields checked against {}",
        sluice_net::supported_apis().len(),
        fields_checked,
        specs.display()
    );
}

#[test]
fn advertised_apis_are_exactly_the_issue_list() {
    let mut names: Vec<&str> = sluice_net::supported_apis()
        .iter()
        .map(|(k, _, _)| k.name())
        .collect();
    names.sort();
    let mut expected = vec![
        "ApiVersions",
        "Metadata",
        "Produce",
        "Fetch",
        "ListOffsets",
        "CreateTopics",
        "DeleteTopics",
        "CreatePartitions",
        "DeleteRecords",
        "DescribeConfigs",
        "AlterConfigs",
        "IncrementalAlterConfigs",
        "DescribeCluster",
        "DescribeQuorum",
        "DescribeLogDirs",
        "FindCoordinator",
        "JoinGroup",
        "SyncGroup",
        "Heartbeat",
        "LeaveGroup",
        "OffsetCommit",
        "OffsetFetch",
        "ListGroups",
        "DescribeGroups",
        "DeleteGroups",
        "OffsetDelete",
        "InitProducerId",
        "AddPartitionsToTxn",
        "AddOffsetsToTxn",
        "EndTxn",
        "TxnOffsetCommit",
        "WriteTxnMarkers",
        "DescribeProducers",
        "OffsetForLeaderEpoch",
        "SaslHandshake",
        "SaslAuthenticate",
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
    expected.sort();
    assert_eq!(names, expected);
}
