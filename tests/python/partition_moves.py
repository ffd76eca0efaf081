"""Partition reassignment admin calls with kafka-python against a three-broker cluster.

Usage: partition_moves.py HOST:PORT TOPIC LEADER
LEADER leads partition 0 of TOPIC. Sluice keeps one copy of a partition: a move to the
broker that already holds it is accepted and leaves nothing pending, a replica list of two
brokers is refused with InvalidReplicaAssignment, a cancel with no move pending with
NoReassignmentInProgress, and ElectLeaders finds no election needed. Exits non-zero with a
message on the first mismatch.
"""
import sys

from kafka import KafkaAdminClient, TopicPartition
from kafka import errors as Errors

INVALID_REPLICA_ASSIGNMENT = 39
ELECTION_NOT_NEEDED = 84
NO_REASSIGNMENT_IN_PROGRESS = 85

bootstrap, topic, leader = sys.argv[1], sys.argv[2], int(sys.argv[3])
other = next(b for b in (1, 2, 3) if b != leader)
tp = TopicPartition(topic, 0)

admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-test")

stay = admin.alter_partition_reassignments({tp: [leader]})
assert stay == {tp: None}, stay
pending = admin.list_partition_reassignments()
assert pending == {}, pending
pending = admin.list_partition_reassignments({topic: [0, 1, 2]})
assert pending == {}, pending

two = admin.alter_partition_reassignments({tp: [leader, other]})
# kafka-python names code 39 InvalidReplicationAssignmentError.
assert two == {tp: Errors.for_code(INVALID_REPLICA_ASSIGNMENT)}, two
cancel = admin.alter_partition_reassignments({tp: None})
assert cancel == {tp: Errors.for_code(NO_REASSIGNMENT_IN_PROGRESS)}, cancel

elected = admin.elect_leaders(0, {topic: [0, 1]}, raise_errors=False)
codes = [
    p.error_code
    for result in elected.replica_election_results
    for p in result.partition_result
]
assert codes == [ELECTION_NOT_NEEDED] * 2, elected
# kafka-python names every partition of every topic for None (it sends no null list).
everything = admin.elect_leaders(0, None, raise_errors=False)
codes = [
    p.error_code
    for result in everything.replica_election_results
    for p in result.partition_result
]
assert codes and set(codes) == {ELECTION_NOT_NEEDED}, everything

admin.close()
print("reassignments ok")
