//! Client quotas (issue 25) on the real broker binary: AlterClientQuotas and
//! DescribeClientQuotas round trips (kept across a restart), and a produce quota that
//! throttles its client (throttle_time_ms, the connection muted, the throttle metric).
//! That a quota holds a client to its rate under load is shown by a benchmark
//! (`benches/quota-holds.sh`), not here.

mod common;

use std::time::{Duration, Instant};

use common::BrokerProcess;
use common::http::get;
use common::raw::{RawClient, produce_request};
use sluice_net::messages::alter_client_quotas_request::{
    AlterClientQuotasRequest, EntityData, EntryData, OpData,
};
use sluice_net::messages::describe_client_quotas_request::{
    ComponentData, DescribeClientQuotasRequest,
};
use sluice_net::messages::describe_client_quotas_response::DescribeClientQuotasResponse;
use sluice_net::record_batch::{Compression, RecordBatchBuilder};
use sluice_net::{Request, Response};

/// The client id `RawClient` sends.
const RAW_CLIENT_ID: &str = "sluice-raw-test";

fn entry(entity: &[(&str, Option<&str>)], ops: &[(&str, Option<f64>)]) -> EntryData {
    EntryData {
        entity: entity
            .iter()
            .map(|(kind, name)| EntityData {
                entity_type: kind.to_string(),
                entity_name: name.map(str::to_string),
            })
            .collect(),
        ops: ops
            .iter()
            .map(|(key, value)| OpData {
                key: key.to_string(),
                value: value.unwrap_or(0.0),
                remove: value.is_none(),
            })
            .collect(),
    }
}

/// AlterClientQuotas: each entity's error code, in request order.
fn alter(broker: &BrokerProcess, entries: Vec<EntryData>, validate_only: bool) -> Vec<i16> {
    let request = Request::AlterClientQuotas(AlterClientQuotasRequest {
        entries,
        validate_only,
    });
    let Response::AlterClientQuotas(altered) = RawClient::connect(broker).call(1, request) else {
        panic!("an AlterClientQuotas response");
    };
    altered.entries.iter().map(|e| e.error_code).collect()
}

fn describe(
    broker: &BrokerProcess,
    components: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> DescribeClientQuotasResponse {
    let request = Request::DescribeClientQuotas(DescribeClientQuotasRequest {
        components: components
            .iter()
            .map(|(kind, match_type, name)| ComponentData {
                entity_type: kind.to_string(),
                match_type: *match_type,
                match_: name.map(str::to_string),
            })
            .collect(),
        strict,
    });
    let Response::DescribeClientQuotas(described) = RawClient::connect(broker).call(1, request)
    else {
        panic!("a DescribeClientQuotas response");
    };
    described
}

/// A Produce (v9 as the tests send it, acks=all) of one record of `value` to partition 0 of
/// `topic`.
fn produce_one(topic: &str, value: &[u8]) -> Request {
    let mut builder = RecordBatchBuilder::new(Compression::None);
    builder.append(0, None, Some(value), &[]);
    produce_request(topic, 0, None, builder.build().expect("a batch"))
}

/// The throttle time of a produce's answer, which must have appended its record.
fn throttle_of(answer: Response) -> i32 {
    let Response::Produce(answer) = answer else {
        panic!("a Produce response");
    };
    assert_eq!(answer.responses[0].partition_responses[0].error_code, 0);
    answer.throttle_time_ms
}

/// (entity as "type=name" pairs, values as "key=value") of each entry, sorted.
fn summary(described: &DescribeClientQuotasResponse) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = described
        .entries
        .as_ref()
        .expect("entries")
        .iter()
        .map(|e| {
            let entity: Vec<String> = e
                .entity
                .iter()
                .map(|p| {
                    format!(
                        "{}={}",
                        p.entity_type,
                        p.entity_name.as_deref().unwrap_or("<default>")
                    )
                })
                .collect();
            let values: Vec<String> = e
                .values
                .iter()
                .map(|v| format!("{}={}", v.key, v.value))
                .collect();
            (entity.join(","), values.join(","))
        })
        .collect();
    entries.sort();
    entries
}

#[test]
fn quotas_altered_are_described_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), &[]);
    let codes = alter(
        &broker,
        vec![
            entry(
                &[("user", Some("alice"))],
                &[("producer_byte_rate", Some(10_485_760.0))],
            ),
            entry(
                &[("user", Some("alice")), ("client-id", None)],
                &[
                    ("consumer_byte_rate", Some(2_000_000.0)),
                    ("request_percentage", Some(50.0)),
                ],
            ),
            entry(
                &[("client-id", None)],
                &[("producer_byte_rate", Some(1_000_000.0))],
            ),
            entry(
                &[("client-id", Some("bad"))],
                &[("producer_byte_rate", Some(-1.0))],
            ),
            entry(
                &[("client-id", Some("bad2"))],
                &[("controller_mutation_rate", Some(1.0))],
            ),
        ],
        false,
    );
    assert_eq!(codes, vec![0, 0, 0, 42, 42]);
    // validate_only checks and writes nothing.
    let codes = alter(
        &broker,
        vec![
            entry(
                &[("user", Some("bob"))],
                &[("producer_byte_rate", Some(1.0))],
            ),
            entry(
                &[("user", Some("carol"))],
                &[("producer_byte_rate", Some(0.5))],
            ),
        ],
        true,
    );
    assert_eq!(codes, vec![0, 42]);

    let everything = vec![
        (
            "client-id=<default>".to_string(),
            "producer_byte_rate=1000000".to_string(),
        ),
        (
            "user=alice".to_string(),
            "producer_byte_rate=10485760".to_string(),
        ),
        (
            "user=alice,client-id=<default>".to_string(),
            "consumer_byte_rate=2000000,request_percentage=50".to_string(),
        ),
    ];
    assert_eq!(summary(&describe(&broker, &[], false)), everything);
    assert_eq!(
        summary(&describe(&broker, &[("user", 0, Some("alice"))], true)),
        vec![everything[1].clone()]
    );
    assert_eq!(
        summary(&describe(&broker, &[("user", 0, Some("alice"))], false)),
        everything[1..].to_vec()
    );
    assert_eq!(
        summary(&describe(&broker, &[("client-id", 1, None)], false)),
        vec![everything[0].clone(), everything[2].clone()]
    );
    assert_eq!(
        summary(&describe(&broker, &[("client-id", 2, None)], true)),
        vec![everything[0].clone()]
    );
    let refused = describe(&broker, &[("user", 0, None)], false);
    assert_eq!(refused.error_code, 42);

    // A removal, then a restart: the quotas are the metadata's.
    let codes = alter(
        &broker,
        vec![entry(
            &[("client-id", None)],
            &[("producer_byte_rate", None)],
        )],
        false,
    );
    assert_eq!(codes, vec![0]);
    broker.check_log();
    let broker = broker.restart();
    assert_eq!(
        summary(&describe(&broker, &[], false)),
        everything[1..].to_vec()
    );
    broker.check_log();
}

/// A produce quota of 100 kB/s for the raw client's id: a 400 kB request takes more than the
/// one second of quota a client may pass at once, its response then carries a throttle time,
/// the broker does not read its next request before that time, and the metric counts it.
#[test]
fn a_client_above_its_produce_quota_is_throttled_and_muted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), &[]);
    let quota_bytes_per_s = 100_000.0;
    let codes = alter(
        &broker,
        vec![entry(
            &[("client-id", Some(RAW_CLIENT_ID))],
            &[("producer_byte_rate", Some(quota_bytes_per_s))],
        )],
        false,
    );
    assert_eq!(codes, vec![0]);
    let mut client = RawClient::connect(&broker);
    client.create_topic("throttled", 1, &[]);
    let value = vec![7u8; 400_000];
    let produce =
        |client: &mut RawClient| throttle_of(client.call(9, produce_one("throttled", &value)));
    let mut throttle_ms = 0;
    for _ in 0..5 {
        throttle_ms = produce(&mut client);
        if throttle_ms > 0 {
            break;
        }
    }
    assert!(
        throttle_ms > 0,
        "the client is throttled after 2 MB at most"
    );
    // The next request waits out the mute (the broker does not read it before).
    let sent_at = Instant::now();
    produce(&mut client);
    let waited = sent_at.elapsed();
    assert!(
        waited >= Duration::from_millis(throttle_ms as u64 * 9 / 10),
        "muted {waited:?}, throttle {throttle_ms} ms"
    );
    let admin = broker.admin.clone().expect("admin address");
    let metrics = get(&admin, "/metrics").body;
    let throttled_ms: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("sluice_quota_throttle_ms_total{") && l.contains("type=\"produce\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        throttled_ms >= throttle_ms as u64,
        "{throttled_ms} in the metrics"
    );
    broker.check_log();
}

/// A throttled client that pipelines its requests is still throttled between each of them:
/// the broker serves a throttled connection one request at a time, so the mute of one answer
/// holds back the next request even when that request was already sent (librdkafka sends
/// many at once after a pause). Quota 1 MB/s, requests of 500 kB.
#[test]
fn pipelined_requests_of_a_throttled_client_wait_for_each_mute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path(), &["--shards", "1"]);
    let codes = alter(
        &broker,
        vec![entry(
            &[("client-id", Some(RAW_CLIENT_ID))],
            &[("producer_byte_rate", Some(1_000_000.0))],
        )],
        false,
    );
    assert_eq!(codes, vec![0]);
    let mut client = RawClient::connect(&broker);
    client.create_topic("pipelined", 1, &[]);
    let value = vec![7u8; 500_000];
    let request = || produce_one("pipelined", &value);
    let answer = |client: &mut RawClient, correlation_id: i32| {
        client.correlation_id = correlation_id;
        let throttle_ms = throttle_of(client.receive(sluice_net::ApiKey::Produce, 9));
        (Instant::now(), throttle_ms)
    };
    // One second of quota passes at once; the third request is throttled.
    let mut throttle_ms = 0;
    for _ in 0..3 {
        let id = client.send(9, &request());
        throttle_ms = answer(&mut client, id).1;
    }
    assert!(throttle_ms > 0, "the third request is throttled");
    // Three more, sent at once: each is read only after the mute of the one before.
    let ids: Vec<i32> = (0..3).map(|_| client.send(9, &request())).collect();
    let answers: Vec<(Instant, i32)> = ids.iter().map(|id| answer(&mut client, *id)).collect();
    for pair in answers.windows(2) {
        let (answered_at, throttle_ms) = pair[0];
        let waited = pair[1].0.duration_since(answered_at);
        assert!(
            waited >= Duration::from_millis(throttle_ms as u64 * 9 / 10),
            "answered {waited:?} after a throttle of {throttle_ms} ms"
        );
    }
    broker.check_log();
}
