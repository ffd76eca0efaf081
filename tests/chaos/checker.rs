//! The history checker: pure (no broker, no I/O). A scenario records what its clients did and
//! saw as a list of [`Event`]s, in the order it saw them; [`check`] returns every rule the
//! history breaks, each with the seed to replay it and the few events that show it.
//!
//! What "dense" means here: a full scan of a partition (every record from its log start to its
//! high watermark, [`Event::ScanEnd`]) must read every offset in between exactly once. Kafka
//! clients never return transaction control markers (librdkafka skips them) and, under
//! read_committed, skip aborted records, and the checker cannot see either. So in a partition
//! that transactional sends went to, a scan may miss at most one offset per transaction that
//! touched it (its marker) plus, under read_committed, one per transactional send that was not
//! committed; in any other partition it may miss none.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// The unique id a workload writes into each record's value.
pub type RecordId = u64;

/// A transaction's id within one history.
pub type TxnId = u64;

/// Violations reported by one `check` at most; the first ones are what matters.
pub const VIOLATIONS_MAX: usize = 20;

/// Events quoted around an offset gap or a misplaced record.
const NEIGHBOURS: i64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isolation {
    ReadUncommitted,
    ReadCommitted,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A record handed to the producer (before any outcome); `txn` is its transaction.
    Send {
        id: RecordId,
        key: String,
        partition: i32,
        txn: Option<TxnId>,
    },
    /// The broker acknowledged the record at `offset`.
    Ack {
        id: RecordId,
        partition: i32,
        offset: i64,
    },
    /// The producer gave up on the record: it may be absent, or present once.
    Fail { id: RecordId, error: String },
    /// A transaction's outcome as its producer saw it. A transaction without one is
    /// undecided: its records may or may not be visible to read_committed.
    TxnEnd { txn: TxnId, committed: bool },
    /// A record a consumer read in scan `scan`; `id` and `key` are None when the value or key
    /// could not be parsed (which is itself a violation).
    Read {
        scan: u32,
        isolation: Isolation,
        partition: i32,
        offset: i64,
        key: Option<String>,
        id: Option<RecordId>,
    },
    /// Scan `scan` read `partition` from `log_start` up to `high_watermark` (excluded).
    ScanEnd {
        scan: u32,
        partition: i32,
        log_start: i64,
        high_watermark: i64,
    },
    /// A group offset commit and whether the broker acknowledged it (an unacknowledged one
    /// may still have been applied).
    GroupCommit {
        group: String,
        partition: i32,
        offset: i64,
        acked: bool,
    },
    /// The committed offset a group offset fetch returned (-1: none).
    GroupFetch {
        group: String,
        partition: i32,
        offset: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Every acknowledged record is read by a full scan (unless read_committed and its
    /// transaction did not commit).
    AckedRead,
    /// An acknowledged record is read at the offset its ack gave.
    AckedOffset,
    /// No record (acknowledged or not) is read twice in one scan.
    NoDuplicate,
    /// Every record read is one that was sent, with its key, in its partition.
    NoStranger,
    /// A full scan reads every offset from the log start to the high watermark once.
    DenseOffsets,
    /// A key's acknowledged records are read in the order they were sent.
    KeyOrder,
    /// A committed group offset never goes backwards.
    CommitMonotonic,
    /// read_committed never returns a record of an aborted or undecided transaction.
    NoAbortedRead,
}

/// A broken rule: which, the seed of the scenario, what, and the events that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub seed: u64,
    pub detail: String,
    pub evidence: Vec<Event>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:?} broken (seed {}): {}",
            self.rule, self.seed, self.detail
        )?;
        for event in &self.evidence {
            writeln!(f, "    {event:?}")?;
        }
        Ok(())
    }
}

/// Checks `history` against every rule; at most `VIOLATIONS_MAX` violations, in rule order.
pub fn check(history: &[Event], seed: u64) -> Vec<Violation> {
    let index = Index::new(history);
    let mut found = Vec::new();
    let mut report = |rule: Rule, detail: String, evidence: Vec<Event>| {
        if found.len() < VIOLATIONS_MAX {
            found.push(Violation {
                rule,
                seed,
                detail,
                evidence,
            });
        }
    };
    for (&(scan, partition), reads) in &index.reads {
        check_scan(&index, scan, partition, reads, &mut report);
    }
    check_scan_ends(&index, &mut report);
    check_commits(history, &mut report);
    found
}

/// What `check` looks events up by.
struct Index<'h> {
    sends: HashMap<RecordId, &'h Event>,
    /// Position of each send among its key's sends.
    send_rank: HashMap<RecordId, usize>,
    acks: HashMap<RecordId, &'h Event>,
    fails: HashMap<RecordId, &'h Event>,
    txn_ends: HashMap<TxnId, &'h Event>,
    /// Transactions that sent to each partition, and their sends there.
    txns_by_partition: HashMap<i32, HashMap<TxnId, usize>>,
    /// Reads of each (scan, partition), by offset (several reads at one offset are kept).
    reads: BTreeMap<(u32, i32), BTreeMap<i64, Vec<&'h Event>>>,
    scan_ends: Vec<&'h Event>,
}

impl<'h> Index<'h> {
    fn new(history: &'h [Event]) -> Index<'h> {
        let mut index = Index {
            sends: HashMap::new(),
            send_rank: HashMap::new(),
            acks: HashMap::new(),
            fails: HashMap::new(),
            txn_ends: HashMap::new(),
            txns_by_partition: HashMap::new(),
            reads: BTreeMap::new(),
            scan_ends: Vec::new(),
        };
        let mut key_sends: HashMap<&str, usize> = HashMap::new();
        for event in history {
            match event {
                Event::Send {
                    id,
                    key,
                    partition,
                    txn,
                } => {
                    index.sends.insert(*id, event);
                    let rank = key_sends.entry(key.as_str()).or_default();
                    index.send_rank.insert(*id, *rank);
                    *rank += 1;
                    if let Some(txn) = txn {
                        *index
                            .txns_by_partition
                            .entry(*partition)
                            .or_default()
                            .entry(*txn)
                            .or_default() += 1;
                    }
                }
                Event::Ack { id, .. } => {
                    index.acks.insert(*id, event);
                }
                Event::Fail { id, .. } => {
                    index.fails.insert(*id, event);
                }
                Event::TxnEnd { txn, .. } => {
                    index.txn_ends.insert(*txn, event);
                }
                Event::Read {
                    scan,
                    partition,
                    offset,
                    ..
                } => index
                    .reads
                    .entry((*scan, *partition))
                    .or_default()
                    .entry(*offset)
                    .or_default()
                    .push(event),
                Event::ScanEnd { .. } => index.scan_ends.push(event),
                Event::GroupCommit { .. } | Event::GroupFetch { .. } => {}
            }
        }
        index
    }

    /// The send, ack and failure of `id`, as far as they exist.
    fn story(&self, id: RecordId) -> Vec<Event> {
        [self.sends.get(&id), self.acks.get(&id), self.fails.get(&id)]
            .into_iter()
            .flatten()
            .map(|e| (*e).clone())
            .collect()
    }

    /// Whether `id` belongs to a transaction that did not commit (aborted or undecided).
    fn uncommitted_txn(&self, id: RecordId) -> Option<TxnId> {
        let Some(Event::Send { txn: Some(txn), .. }) = self.sends.get(&id) else {
            return None;
        };
        match self.txn_ends.get(txn) {
            Some(Event::TxnEnd {
                committed: true, ..
            }) => None,
            _ => Some(*txn),
        }
    }

    /// Reads of (scan, partition) within `NEIGHBOURS` of `offset`.
    fn reads_near(&self, scan: u32, partition: i32, offset: i64) -> Vec<Event> {
        self.reads
            .get(&(scan, partition))
            .into_iter()
            .flat_map(|r| r.range(offset - NEIGHBOURS..=offset + NEIGHBOURS))
            .flat_map(|(_, reads)| reads.iter().map(|e| (*e).clone()))
            .collect()
    }
}

fn read_fields(event: &Event) -> Option<(Isolation, i64, Option<&str>, Option<RecordId>)> {
    match event {
        Event::Read {
            isolation,
            offset,
            key,
            id,
            ..
        } => Some((*isolation, *offset, key.as_deref(), *id)),
        _ => None,
    }
}

/// The rules about what one scan of one partition read: strangers, duplicates, offsets of
/// acknowledged records, aborted records, key order.
fn check_scan(
    index: &Index<'_>,
    scan: u32,
    partition: i32,
    reads: &BTreeMap<i64, Vec<&Event>>,
    report: &mut impl FnMut(Rule, String, Vec<Event>),
) {
    let mut seen: HashMap<RecordId, Vec<&Event>> = HashMap::new();
    // The last acknowledged record read of each key: (its send rank, its id).
    let mut last_of_key: HashMap<&str, (usize, RecordId)> = HashMap::new();
    for read in reads.values().flatten() {
        let Some((isolation, offset, key, id)) = read_fields(read) else {
            continue;
        };
        let sent = id.and_then(|id| index.sends.get(&id));
        let Some(Event::Send {
            key: sent_key,
            partition: sent_partition,
            ..
        }) = sent
        else {
            report(
                Rule::NoStranger,
                format!("scan {scan} read a record never sent at {partition}/{offset}"),
                vec![(*read).clone()],
            );
            continue;
        };
        let id = id.unwrap_or_default();
        if key != Some(sent_key.as_str()) || *sent_partition != partition {
            let mut evidence = index.story(id);
            evidence.push((*read).clone());
            report(
                Rule::NoStranger,
                format!("record {id} read with another key or partition than it was sent with"),
                evidence,
            );
            continue;
        }
        seen.entry(id).or_default().push(*read);
        if isolation == Isolation::ReadCommitted
            && let Some(txn) = index.uncommitted_txn(id)
        {
            let mut evidence = index.story(id);
            evidence.extend(index.txn_ends.get(&txn).map(|e| (*e).clone()));
            evidence.push((*read).clone());
            report(
                Rule::NoAbortedRead,
                format!(
                    "read_committed scan {scan} returned record {id} of transaction {txn}, which did not commit"
                ),
                evidence,
            );
        }
        if let Some(Event::Ack {
            offset: acked_at, ..
        }) = index.acks.get(&id)
        {
            // A negative offset is an acknowledgement without one: librdkafka acknowledges a
            // batch whose response was lost (-1001) once a later batch of the same idempotent
            // producer is acknowledged. The record must still be read, anywhere.
            if *acked_at >= 0 && *acked_at != offset {
                let mut evidence = index.story(id);
                evidence.push((*read).clone());
                report(
                    Rule::AckedOffset,
                    format!(
                        "record {id} acknowledged at offset {acked_at}, read at {offset} in scan {scan}"
                    ),
                    evidence,
                );
            }
            let rank = index.send_rank.get(&id).copied().unwrap_or_default();
            if let Some(&(last_rank, last_id)) = last_of_key.get(sent_key.as_str())
                && last_rank > rank
            {
                let mut evidence = index.story(last_id);
                evidence.extend(index.story(id));
                evidence.extend(
                    reads
                        .values()
                        .flatten()
                        .filter(|r| read_fields(r).is_some_and(|f| f.3 == Some(last_id)))
                        .map(|r| (*r).clone()),
                );
                evidence.push((*read).clone());
                report(
                    Rule::KeyOrder,
                    format!(
                        "key {sent_key}: record {id} was sent before record {last_id} but read after it in scan {scan}"
                    ),
                    evidence,
                );
            }
            last_of_key.insert(sent_key.as_str(), (rank, id));
        }
    }
    let mut duplicated: Vec<_> = seen.into_iter().filter(|(_, r)| r.len() > 1).collect();
    duplicated.sort_by_key(|(id, _)| *id);
    for (id, reads) in duplicated {
        let mut evidence = index.story(id);
        evidence.extend(reads.iter().map(|r| (*r).clone()));
        report(
            Rule::NoDuplicate,
            format!("record {id} read {} times in scan {scan}", reads.len()),
            evidence,
        );
    }
}

/// The rules that need a full scan: every acknowledged record read, dense offsets.
fn check_scan_ends(index: &Index<'_>, report: &mut impl FnMut(Rule, String, Vec<Event>)) {
    let empty = BTreeMap::new();
    for end in &index.scan_ends {
        let Event::ScanEnd {
            scan,
            partition,
            log_start,
            high_watermark,
        } = **end
        else {
            continue;
        };
        let reads = index.reads.get(&(scan, partition)).unwrap_or(&empty);
        let isolation = reads
            .values()
            .flatten()
            .find_map(|r| read_fields(r).map(|f| f.0))
            .unwrap_or(Isolation::ReadUncommitted);
        // Acknowledged records of this partition that the scan did not read.
        let read_ids: HashSet<RecordId> = reads
            .values()
            .flatten()
            .filter_map(|r| read_fields(r).and_then(|f| f.3))
            .collect();
        let mut lost: Vec<(i64, RecordId)> = index
            .acks
            .values()
            .filter_map(|ack| match ack {
                Event::Ack {
                    id,
                    partition: p,
                    offset,
                } if *p == partition => Some((*offset, *id)),
                _ => None,
            })
            .filter(|(offset, id)| {
                // An acknowledgement without an offset (negative) counts from log start 0 only:
                // past a moved log start the record may have been deleted.
                let in_log = *offset >= log_start || (*offset < 0 && log_start == 0);
                !read_ids.contains(id)
                    && in_log
                    && !(isolation == Isolation::ReadCommitted
                        && index.uncommitted_txn(*id).is_some())
            })
            .collect();
        lost.sort_unstable();
        for (offset, id) in lost {
            let mut evidence = index.story(id);
            evidence.push((*end).clone());
            evidence.extend(index.reads_near(scan, partition, offset));
            report(
                Rule::AckedRead,
                format!(
                    "record {id}, acknowledged at {partition}/{offset}, not read by full scan {scan}"
                ),
                evidence,
            );
        }
        // Dense offsets: within [log_start, high_watermark), each once, misses only as allowed.
        let outside: Vec<i64> = reads
            .keys()
            .copied()
            .filter(|o| *o < log_start || *o >= high_watermark)
            .collect();
        if let Some(&offset) = outside.first() {
            let mut evidence = vec![(*end).clone()];
            evidence.extend(index.reads_near(scan, partition, offset));
            report(
                Rule::DenseOffsets,
                format!(
                    "scan {scan} read {partition}/{offset}, outside [{log_start}, {high_watermark})"
                ),
                evidence,
            );
        }
        if let Some((&offset, twice)) = reads.iter().find(|(_, r)| r.len() > 1) {
            let mut evidence = vec![(*end).clone()];
            evidence.extend(twice.iter().map(|r| (*r).clone()));
            report(
                Rule::DenseOffsets,
                format!(
                    "scan {scan} read {} records at {partition}/{offset}",
                    twice.len()
                ),
                evidence,
            );
        }
        let txns = index.txns_by_partition.get(&partition);
        let markers = txns.map_or(0, |t| t.len() as i64);
        let hidden = match isolation {
            Isolation::ReadUncommitted => 0,
            Isolation::ReadCommitted => txns.map_or(0, |t| {
                t.iter()
                    .filter(|(txn, _)| {
                        !matches!(
                            index.txn_ends.get(txn),
                            Some(Event::TxnEnd {
                                committed: true,
                                ..
                            })
                        )
                    })
                    .map(|(_, sends)| *sends as i64)
                    .sum()
            }),
        };
        let inside = reads
            .range(log_start..high_watermark.max(log_start))
            .count() as i64;
        let missing = (high_watermark - log_start).max(0) - inside;
        if missing > markers + hidden {
            let mut expected = log_start;
            let mut gap = (high_watermark, high_watermark);
            for &offset in reads
                .range(log_start..high_watermark.max(log_start))
                .map(|r| r.0)
            {
                if offset != expected {
                    gap = (expected, offset);
                    break;
                }
                expected = offset + 1;
            }
            if gap.0 == high_watermark {
                gap.0 = expected;
            }
            let mut evidence = vec![(*end).clone()];
            evidence.extend(index.reads_near(scan, partition, gap.0 - 1));
            evidence.extend(index.reads_near(scan, partition, gap.1 + NEIGHBOURS));
            evidence.dedup();
            report(
                Rule::DenseOffsets,
                format!(
                    "scan {scan} of partition {partition} missed {missing} offsets of [{log_start}, {high_watermark}) (at most {} allowed: transaction markers and hidden records), the first gap is [{}, {})",
                    markers + hidden,
                    gap.0,
                    gap.1
                ),
                evidence,
            );
        }
    }
}

/// A group's committed offset never goes backwards: a fetch returns at least the highest
/// acknowledged commit before it (or an unacknowledged commit, which may have landed late),
/// and never less than an earlier fetch returned.
fn check_commits(history: &[Event], report: &mut impl FnMut(Rule, String, Vec<Event>)) {
    #[derive(Default)]
    struct State<'h> {
        highest: Option<&'h Event>,
        highest_offset: i64,
        unacked: HashSet<i64>,
    }
    let mut states: HashMap<(&str, i32), State<'_>> = HashMap::new();
    for event in history {
        match event {
            Event::GroupCommit {
                group,
                partition,
                offset,
                acked,
            } => {
                let state = states.entry((group.as_str(), *partition)).or_default();
                if !acked {
                    state.unacked.insert(*offset);
                } else if state.highest.is_none() || *offset >= state.highest_offset {
                    state.highest = Some(event);
                    state.highest_offset = *offset;
                }
            }
            Event::GroupFetch {
                group,
                partition,
                offset,
            } => {
                let state = states.entry((group.as_str(), *partition)).or_default();
                match state.highest {
                    Some(highest)
                        if *offset < state.highest_offset && !state.unacked.contains(offset) =>
                    {
                        report(
                            Rule::CommitMonotonic,
                            format!(
                                "group {group} partition {partition}: committed offset {offset} read back after {} was committed or read",
                                state.highest_offset
                            ),
                            vec![highest.clone(), event.clone()],
                        );
                    }
                    _ if state.highest.is_none() || *offset > state.highest_offset => {
                        state.highest = Some(event);
                        state.highest_offset = *offset;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 42;

    fn send(id: RecordId, key: &str, partition: i32) -> Event {
        Event::Send {
            id,
            key: key.into(),
            partition,
            txn: None,
        }
    }

    fn txn_send(id: RecordId, key: &str, partition: i32, txn: TxnId) -> Event {
        Event::Send {
            id,
            key: key.into(),
            partition,
            txn: Some(txn),
        }
    }

    fn ack(id: RecordId, partition: i32, offset: i64) -> Event {
        Event::Ack {
            id,
            partition,
            offset,
        }
    }

    fn read(partition: i32, offset: i64, key: &str, id: RecordId) -> Event {
        read_as(Isolation::ReadUncommitted, partition, offset, key, id)
    }

    fn read_as(
        isolation: Isolation,
        partition: i32,
        offset: i64,
        key: &str,
        id: RecordId,
    ) -> Event {
        Event::Read {
            scan: 0,
            isolation,
            partition,
            offset,
            key: Some(key.into()),
            id: Some(id),
        }
    }

    fn scan_end(partition: i32, log_start: i64, high_watermark: i64) -> Event {
        Event::ScanEnd {
            scan: 0,
            partition,
            log_start,
            high_watermark,
        }
    }

    fn commit(offset: i64, acked: bool) -> Event {
        Event::GroupCommit {
            group: "g".into(),
            partition: 0,
            offset,
            acked,
        }
    }

    fn fetch(offset: i64) -> Event {
        Event::GroupFetch {
            group: "g".into(),
            partition: 0,
            offset,
        }
    }

    /// Three records of two keys in partition 0 and one in partition 1, the third failed but
    /// written anyway, an unacknowledged fourth never written, read back in full.
    fn clean() -> Vec<Event> {
        vec![
            send(1, "a", 0),
            send(2, "b", 0),
            send(3, "a", 0),
            send(4, "c", 1),
            send(5, "a", 0),
            ack(1, 0, 0),
            ack(2, 0, 1),
            Event::Fail {
                id: 3,
                error: "timed out".into(),
            },
            ack(4, 1, 0),
            commit(10, true),
            fetch(10),
            read(0, 0, "a", 1),
            read(0, 1, "b", 2),
            read(0, 2, "a", 3),
            scan_end(0, 0, 3),
            read(1, 0, "c", 4),
            scan_end(1, 0, 1),
        ]
    }

    /// The rules `history` breaks, each once.
    fn broken(history: &[Event]) -> Vec<Rule> {
        let mut rules: Vec<Rule> = check(history, SEED).into_iter().map(|v| v.rule).collect();
        rules.dedup();
        rules
    }

    #[test]
    fn a_clean_history_passes() {
        assert_eq!(check(&clean(), SEED), vec![]);
    }

    #[test]
    fn a_lost_acknowledged_record_is_caught_with_its_story() {
        let history: Vec<Event> = clean()
            .into_iter()
            .filter(|e| !matches!(e, Event::Read { id: Some(2), .. }))
            .collect();
        let violations = check(&history, SEED);
        assert_eq!(violations[0].rule, Rule::AckedRead);
        assert_eq!(violations[0].seed, SEED);
        assert!(violations[0].evidence.contains(&ack(2, 0, 1)));
        assert!(
            !violations[0].evidence.contains(&send(4, "c", 1)),
            "only the offending partition"
        );
        assert!(broken(&history).contains(&Rule::DenseOffsets));
    }

    /// The clean history with record 6 sent to partition 1, acknowledged at `acked_at` and
    /// read at offset 1 by the scan, which then ends at 2.
    fn with_record_6_read_at_1(acked_at: i64) -> Vec<Event> {
        let mut history = clean();
        history.push(send(6, "c", 1));
        history.push(ack(6, 1, acked_at));
        history.push(read(1, 1, "c", 6));
        history.push(scan_end(1, 0, 2));
        history
            .into_iter()
            .filter(|e| *e != scan_end(1, 0, 1))
            .collect()
    }

    #[test]
    fn an_acknowledgement_without_an_offset_needs_a_read_anywhere() {
        let history = with_record_6_read_at_1(-1001);
        assert_eq!(broken(&history), Vec::<Rule>::new());
        let unread: Vec<Event> = history
            .into_iter()
            .filter(|e| *e != read(1, 1, "c", 6))
            .map(|e| match e {
                Event::ScanEnd {
                    scan: 0,
                    partition: 1,
                    ..
                } => scan_end(1, 0, 1),
                e => e,
            })
            .collect();
        assert_eq!(broken(&unread), vec![Rule::AckedRead]);
    }

    #[test]
    fn an_acknowledged_record_at_another_offset_is_caught() {
        assert_eq!(broken(&with_record_6_read_at_1(1)), Vec::<Rule>::new());
        // The broker served it at 1 in the scan, but its ack said 5.
        let history = with_record_6_read_at_1(5);
        assert_eq!(broken(&history), vec![Rule::AckedOffset]);
    }

    #[test]
    fn a_duplicate_is_caught_also_of_a_failed_send() {
        let mut history = clean();
        history.retain(|e| *e != scan_end(0, 0, 3));
        history.push(read(0, 3, "a", 3));
        history.push(scan_end(0, 0, 4));
        assert_eq!(broken(&history), vec![Rule::NoDuplicate]);
    }

    #[test]
    fn a_record_never_sent_or_with_another_key_is_caught() {
        let mut history = clean();
        history.push(Event::Read {
            scan: 1,
            isolation: Isolation::ReadUncommitted,
            partition: 0,
            offset: 0,
            key: Some("a".into()),
            id: None,
        });
        history.push(Event::Read {
            scan: 1,
            isolation: Isolation::ReadUncommitted,
            partition: 0,
            offset: 1,
            key: Some("z".into()),
            id: Some(2),
        });
        assert_eq!(broken(&history), vec![Rule::NoStranger]);
        assert_eq!(check(&history, SEED).len(), 2);
    }

    #[test]
    fn a_gap_in_the_offsets_is_caught_and_shown() {
        let mut history = clean();
        history.retain(|e| *e != scan_end(1, 0, 1));
        history.push(scan_end(1, 0, 3));
        let violations = check(&history, SEED);
        assert_eq!(broken(&history), vec![Rule::DenseOffsets]);
        assert!(
            violations[0].detail.contains("first gap is [1, 3)"),
            "{}",
            violations[0]
        );
        // Reads outside the scanned range and two records at one offset break it too.
        let mut history = clean();
        history.push(read(1, 1, "c", 4));
        assert!(broken(&history).contains(&Rule::DenseOffsets));
    }

    #[test]
    fn transaction_markers_may_leave_gaps_but_no_more() {
        // Transaction 7 wrote records 10 and 11 at 0 and 1 and committed (marker at 2);
        // transaction 8 wrote 12 at 3 and aborted (marker at 4).
        let mut history = vec![
            txn_send(10, "t", 2, 7),
            txn_send(11, "t", 2, 7),
            ack(10, 2, 0),
            ack(11, 2, 1),
            Event::TxnEnd {
                txn: 7,
                committed: true,
            },
            txn_send(12, "t", 2, 8),
            ack(12, 2, 3),
            Event::TxnEnd {
                txn: 8,
                committed: false,
            },
        ];
        let committed = [
            read_as(Isolation::ReadCommitted, 2, 0, "t", 10),
            read_as(Isolation::ReadCommitted, 2, 1, "t", 11),
            scan_end(2, 0, 5),
        ];
        history.extend(committed.clone());
        assert_eq!(check(&history, SEED), vec![]);
        // One gap more than the markers and the aborted record explain.
        let mut wider = history.clone();
        wider.retain(|e| *e != scan_end(2, 0, 5));
        wider.push(scan_end(2, 0, 6));
        assert_eq!(broken(&wider), vec![Rule::DenseOffsets]);
    }

    #[test]
    fn read_committed_returning_aborted_data_is_caught() {
        let history = vec![
            txn_send(12, "t", 2, 8),
            ack(12, 2, 0),
            Event::TxnEnd {
                txn: 8,
                committed: false,
            },
            read_as(Isolation::ReadCommitted, 2, 0, "t", 12),
        ];
        assert_eq!(broken(&history), vec![Rule::NoAbortedRead]);
        // read_uncommitted may return it.
        let mut uncommitted = history.clone();
        uncommitted[3] = read(2, 0, "t", 12);
        assert_eq!(check(&uncommitted, SEED), vec![]);
    }

    #[test]
    fn a_key_read_out_of_send_order_is_caught() {
        // Records 1 and 3 of key a swapped places in the log (acks agree with the log).
        let history = vec![
            send(1, "a", 0),
            send(3, "a", 0),
            ack(3, 0, 0),
            ack(1, 0, 1),
            read(0, 0, "a", 3),
            read(0, 1, "a", 1),
            scan_end(0, 0, 2),
        ];
        let violations = check(&history, SEED);
        assert_eq!(broken(&history), vec![Rule::KeyOrder]);
        assert!(
            violations[0]
                .detail
                .contains("record 1 was sent before record 3")
        );
    }

    #[test]
    fn a_committed_offset_going_backwards_is_caught() {
        let history = vec![commit(10, true), commit(20, true), fetch(10)];
        assert_eq!(broken(&history), vec![Rule::CommitMonotonic]);
        // A fetch lower than an earlier fetch.
        let history = vec![commit(10, true), fetch(30), fetch(20)];
        assert_eq!(broken(&history), vec![Rule::CommitMonotonic]);
        // An unacknowledged commit that landed late is not a violation.
        let history = vec![commit(15, false), commit(20, true), fetch(15)];
        assert_eq!(check(&history, SEED), vec![]);
    }

    #[test]
    fn violations_are_bounded() {
        let mut history = Vec::new();
        for id in 0..100 {
            history.push(send(id, "a", 0));
            history.push(ack(id, 0, id as i64));
        }
        history.push(scan_end(0, 0, 100));
        assert_eq!(check(&history, SEED).len(), VIOLATIONS_MAX);
    }
}
