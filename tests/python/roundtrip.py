"""Round trip with kafka-python, an independent client implementation.

Usage: roundtrip.py HOST:PORT
Creates a topic, produces records with keys, headers and null values under every
codec, reads them back with assign() (no group) and checks order, offsets and
content. Exits non-zero with a message on the first mismatch.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

bootstrap = sys.argv[1]
topic = "python-roundtrip"
partitions = 3
per_codec = 2000
codecs = [None, "gzip", "snappy", "lz4", "zstd"]

admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-test")
admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
described = admin.describe_topics([topic])
assert len(described[0]["partitions"]) == partitions, described

expected = {p: [] for p in range(partitions)}
n = 0
for codec in codecs:
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, acks="all", linger_ms=5)
    futures = []
    for _ in range(per_codec):
        value = None if n % 7 == 3 else ("py-%d-%s" % (n, "y" * (n % 40))).encode()
        key = ("k%d" % n).encode()
        headers = [("n", str(n).encode()), ("codec", (codec or "none").encode())]
        futures.append((n, value, producer.send(topic, key=key, value=value, headers=headers, partition=n % partitions)))
        n += 1
    producer.flush()
    for i, value, future in futures:
        meta = future.get(timeout=60)
        expected[meta.partition].append((meta.offset, i, value))
    producer.close()

consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", consumer_timeout_ms=20000)
for p in range(partitions):
    tp = TopicPartition(topic, p)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    want = sorted(expected[p])
    got = []
    deadline = time.time() + 60
    while len(got) < len(want) and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    assert len(got) == len(want), "partition %d: consumed %d of %d" % (p, len(got), len(want))
    for position, ((offset, i, value), record) in enumerate(zip(want, got)):
        assert offset == position, "offsets must be dense: %d at %d" % (offset, position)
        assert record.offset == offset, (record.offset, offset)
        assert record.key == ("k%d" % i).encode(), (record.key, i)
        assert record.value == value, (record.value, value)
        assert dict(record.headers)["n"] == str(i).encode(), record.headers
consumer.close()

end = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
offsets = end.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
assert sum(offsets.values()) == n, offsets
end.close()
admin.delete_topics([topic])
admin.close()
print("kafka-python round trip: %d records over %d partitions, %d codecs: ok" % (n, partitions, len(codecs)))
