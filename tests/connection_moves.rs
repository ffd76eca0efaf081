//! Connections accepted by a shard that does not own their partitions move to the owner
//! (`shards/src/affinity.rs`), with requests in flight, and lose or reorder nothing.

mod common;

use std::time::Duration;

use common::BrokerProcess;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "moves";
/// Each producer is its own client with its own connection, placed by the kernel: with 12 of
/// them on 2 shards, the chance that none lands on the shard not owning the partition is 1 in
/// 4096.
const PRODUCERS: usize = 12;
/// Per producer: 6 MiB, past the 4 MiB after which a connection may move.
const RECORDS_PER_PRODUCER: usize = 96;
const RECORD_BYTES: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(60);

fn value(producer: usize, seq: usize) -> Vec<u8> {
    let mut v = vec![(producer * 31 + seq) as u8; RECORD_BYTES];
    v[..8].copy_from_slice(&(producer as u32).to_be_bytes().repeat(2));
    v[8..16].copy_from_slice(&(seq as u64).to_be_bytes());
    v
}

fn moved_connections(admin: &str) -> u64 {
    common::http::get(admin, "/metrics")
        .body
        .lines()
        .filter(|l| l.starts_with("sluice_connections_moved_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_on_the_wrong_shard_move_and_every_record_stays_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--shards", "2"]);
    let admin: AdminClient<DefaultClientContext> =
        broker.client_config().create().expect("admin client");
    for result in admin
        .create_topics(
            &[NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap()
    {
        result.unwrap();
    }

    let mut expected = Vec::new();
    for p in 0..PRODUCERS {
        let producer: FutureProducer = broker
            .client_config()
            .set("linger.ms", "5")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        let deliveries: Vec<_> = (0..RECORDS_PER_PRODUCER)
            .map(|seq| {
                let payload = value(p, seq);
                producer
                    .send_result(
                        FutureRecord::<(), _>::to(TOPIC)
                            .partition(0)
                            .payload(&payload),
                    )
                    .unwrap_or_else(|(e, _)| panic!("enqueue failed: {e}"))
            })
            .collect();
        let mut last = -1;
        for (seq, delivery) in deliveries.into_iter().enumerate() {
            let delivered = delivery
                .await
                .expect("delivery answered")
                .unwrap_or_else(|(e, _)| panic!("producer {p} record {seq}: {e}"));
            assert_eq!(delivered.partition, 0);
            let offset = delivered.offset;
            assert!(offset > last, "a producer's records keep their order");
            last = offset;
            expected.push((offset, p, seq));
        }
    }
    let admin_addr = broker.admin.clone().expect("admin port");
    assert!(
        moved_connections(&admin_addr) >= 1,
        "some producer connection landed on the shard not owning the partition and moved"
    );

    // A consumer connection may move too; either way it reads everything back, densely.
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "moves-check")
        .set("fetch.max.bytes", "1048576")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    expected.sort();
    for (i, (offset, p, seq)) in expected.iter().enumerate() {
        let message = common::wait_for(TIMEOUT, || consumer.poll(Duration::from_millis(100)))
            .expect("a record")
            .expect("no consume error");
        assert_eq!(message.offset(), i as i64, "offsets are dense");
        assert_eq!(message.offset(), *offset);
        assert_eq!(message.payload(), Some(&value(*p, *seq)[..]));
    }
}
