"""Consumer groups with kafka-python: commit and resume, a two-member split, admin views.

Usage: groups.py HOST:PORT
"""
import sys
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

bootstrap = sys.argv[1]
topic = "py-groups"
partitions = 4
per_partition = 100

admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-groups-test")
admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, "0",
                                    configs={"group.initial.rebalance.delay.ms": "0"})])
admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
for i in range(per_partition):
    for p in range(partitions):
        producer.send(topic, value=("%d-%d" % (p, i)).encode(), partition=p)
producer.flush()
producer.close()
total = partitions * per_partition


def consumer(group):
    return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=30000, heartbeat_interval_ms=500)


# A first member consumes part, commits, leaves; a second resumes exactly after the commit.
first = consumer("py-resume")
seen = []
deadline = time.time() + 60
while len(seen) < total // 2 and time.time() < deadline:
    for records in first.poll(timeout_ms=500).values():
        seen.extend((r.partition, r.offset) for r in records)
assert len(seen) >= total // 2, "first member consumed %d" % len(seen)
first.commit()
first.close()

second = consumer("py-resume")
rest = []
deadline = time.time() + 60
while len(seen) + len(rest) < total and time.time() < deadline:
    for records in second.poll(timeout_ms=500).values():
        rest.extend((r.partition, r.offset) for r in records)
second.close()
everything = seen + rest
assert len(everything) == total, "consumed %d of %d (duplicates or loss)" % (len(everything), total)
assert len(set(everything)) == total, "duplicates across the commit"

# Two members of one group split the partitions. Each polls on its own thread: a kafka-python
# consumer joins inside poll(), so one thread polling both would starve one of them.
a, b = consumer("py-split"), consumer("py-split")
stop = threading.Event()


def keep_polling(member):
    while not stop.is_set():
        member.poll(timeout_ms=100)


threads = [threading.Thread(target=keep_polling, args=(m,)) for m in (a, b)]
for t in threads:
    t.start()
deadline = time.time() + 60
while time.time() < deadline:
    sa = {tp.partition for tp in a.assignment()}
    sb = {tp.partition for tp in b.assignment()}
    if sa and sb and not (sa & sb) and (sa | sb) == set(range(partitions)):
        break
    time.sleep(0.05)
else:
    stop.set()
    raise AssertionError("no clean split: %s %s" % (sa, sb))


def group_ids():
    return {g["group_id"] if isinstance(g, dict) else (g[0] if isinstance(g, tuple) else g.group_id)
            for g in admin.list_groups()}


groups = group_ids()
assert {"py-resume", "py-split"} <= groups, groups
described = admin.describe_groups(["py-split"])
if isinstance(described, dict):
    described = described.get("py-split", described)
else:
    described = described[0]
members = described["members"] if isinstance(described, dict) else described.members
assert len(members) == 2, described
stop.set()
for t in threads:
    t.join()
a.close()
b.close()
admin.delete_groups(["py-resume"])
groups = group_ids()
assert "py-resume" not in groups, groups
admin.close()
print("kafka-python groups: resume after commit, two-member split, list/describe/delete: ok")
