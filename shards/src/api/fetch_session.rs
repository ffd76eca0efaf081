//! Incremental fetch sessions (KIP-227). A consumer that fetches many partitions sends them
//! all once, then only what changed (a new fetch offset, a partition added or forgotten); the
//! broker answers only the partitions with news (records, an error, a moved high watermark,
//! last stable offset or log start). Each shard keeps the sessions of the fetches it serves,
//! at most `max.incremental.fetch.session.cache.slots` shared out over the shards; a session
//! id names its shard, so a connection that moved to another shard finds no session there and
//! starts a new one, as a client does after FETCH_SESSION_ID_NOT_FOUND.
//!
//! Kafka's rules (`FetchSession.scala`): session 0 with epoch -1 is a fetch without a session;
//! epoch 0 opens a session (closing the one named, if any), and a full cache answers session 0
//! (no session); epoch -1 with a session id closes it; a positive epoch must be the session's
//! next one (else INVALID_FETCH_SESSION_EPOCH), and an unknown id is
//! FETCH_SESSION_ID_NOT_FOUND.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sluice_net::ErrorCode;
use sluice_net::Uuid;
use sluice_net::messages::fetch_request::FetchRequest;

/// Kafka's `min.incremental.fetch.session.eviction.ms`: a session used this recently is never
/// evicted for a new one.
const EVICTION_IDLE_MIN: Duration = Duration::from_secs(120);

/// Partitions one session may hold. A session grows by what its client adds; past this it is
/// closed (FETCH_SESSION_ID_NOT_FOUND, and the client starts over).
pub const SESSION_PARTITIONS_MAX: usize = 50_000;

/// Bits of a session id that name its shard (the metadata's SHARDS_MAX is 1024).
const SHARD_BITS: u32 = 10;

/// A partition as a fetch names it: by topic name (Fetch v12 and older) or topic id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FetchKey {
    /// Topic name (empty from v13 on).
    pub topic: String,
    /// Topic id (zero before v13).
    pub topic_id: Uuid,
    /// Partition index.
    pub partition: i32,
}

/// One partition a fetch reads, with where to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The partition.
    pub key: FetchKey,
    /// Offset to read from.
    pub fetch_offset: i64,
    /// The client's max.partition.fetch.bytes.
    pub partition_max_bytes: i32,
    /// The leader epoch the client knows (-1: none), checked as Kafka does.
    pub current_leader_epoch: i32,
}

/// What a partition's answer last told the client: a change makes an incremental fetch
/// include it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset.
    pub last_stable_offset: i64,
    /// Log start offset.
    pub log_start_offset: i64,
}

/// What a fetch reads and how it answers, decided before it reads.
#[derive(Debug)]
pub struct FetchPlan {
    /// The session id to answer (0: none).
    pub session_id: i32,
    /// Answer only partitions with news (an incremental fetch).
    pub incremental: bool,
    /// The partitions to read, in the session's order.
    pub wanted: Vec<Wanted>,
}

struct Session {
    next_epoch: i32,
    partitions: Vec<(Wanted, Option<Sent>)>,
    index: HashMap<FetchKey, usize>,
    last_used: Instant,
}

impl Session {
    fn new(wanted: Vec<Wanted>, now: Instant) -> Session {
        let mut session = Session {
            next_epoch: 1,
            partitions: Vec::with_capacity(wanted.len()),
            index: HashMap::with_capacity(wanted.len()),
            last_used: now,
        };
        for w in wanted {
            session.upsert(w);
        }
        session
    }

    /// Adds a partition, or takes its new fetch offset and max bytes.
    fn upsert(&mut self, wanted: Wanted) {
        match self.index.get(&wanted.key) {
            Some(&i) => self.partitions[i].0 = wanted,
            None => {
                self.index.insert(wanted.key.clone(), self.partitions.len());
                self.partitions.push((wanted, None));
            }
        }
    }

    fn forget(&mut self, forgotten: &[FetchKey]) {
        if forgotten.is_empty() {
            return;
        }
        self.partitions.retain(|(w, _)| !forgotten.contains(&w.key));
        self.index = self
            .partitions
            .iter()
            .enumerate()
            .map(|(i, (w, _))| (w.key.clone(), i))
            .collect();
    }
}

/// The fetch sessions of one shard.
pub struct FetchSessions {
    shard: usize,
    next_sequence: u32,
    sessions: HashMap<i32, Session>,
}

impl FetchSessions {
    /// The (empty) sessions of shard `shard`.
    pub fn new(shard: usize) -> FetchSessions {
        FetchSessions {
            shard,
            next_sequence: 1,
            sessions: HashMap::new(),
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Decides what `request` (of Fetch `version`) reads, opening, advancing or closing its
    /// session; `slots` sessions at most may be held. The error is the response's top-level
    /// error code.
    pub fn begin(
        &mut self,
        version: i16,
        request: &FetchRequest,
        slots: usize,
        now: Instant,
    ) -> Result<FetchPlan, ErrorCode> {
        let wanted = wanted_of(version, request);
        let session_id = request.session_id;
        match request.session_epoch {
            // A full fetch without a session; a named session is closed.
            -1 => {
                self.sessions.remove(&session_id);
                Ok(FetchPlan {
                    session_id: 0,
                    incremental: false,
                    wanted,
                })
            }
            // A full fetch opening a session (in place of the one named).
            0 => {
                self.sessions.remove(&session_id);
                let id = if wanted.len() <= SESSION_PARTITIONS_MAX && self.make_room(slots, now) {
                    let id = self.new_id();
                    self.sessions.insert(id, Session::new(wanted.clone(), now));
                    id
                } else {
                    0
                };
                Ok(FetchPlan {
                    session_id: id,
                    incremental: false,
                    wanted,
                })
            }
            epoch => {
                let session = self
                    .sessions
                    .get_mut(&session_id)
                    .ok_or(ErrorCode::FetchSessionIdNotFound)?;
                if epoch != session.next_epoch {
                    return Err(ErrorCode::InvalidFetchSessionEpoch);
                }
                session.next_epoch = next_epoch(epoch);
                session.last_used = now;
                session.forget(&forgotten_of(version, request));
                for w in wanted {
                    session.upsert(w);
                }
                if session.partitions.len() > SESSION_PARTITIONS_MAX {
                    self.sessions.remove(&session_id);
                    return Err(ErrorCode::FetchSessionIdNotFound);
                }
                Ok(FetchPlan {
                    session_id,
                    incremental: true,
                    wanted: session.partitions.iter().map(|(w, _)| w.clone()).collect(),
                })
            }
        }
    }

    /// After the reads of a fetch in `session_id`: records what each answered partition told
    /// the client, and (`incremental`) says which answers to send: those with records or an
    /// error, and those whose offsets moved since the client last heard of them.
    pub fn finish(
        &mut self,
        session_id: i32,
        incremental: bool,
        answers: &[(FetchKey, Sent, bool)],
    ) -> Vec<bool> {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return vec![true; answers.len()];
        };
        answers
            .iter()
            .map(|(key, sent, has_news)| {
                let Some(&i) = session.index.get(key) else {
                    return true;
                };
                let last = &mut session.partitions[i].1;
                let send = !incremental || *has_news || *last != Some(*sent);
                if send {
                    *last = Some(*sent);
                }
                send
            })
            .collect()
    }

    /// Frees a slot for a new session if the cache is full: the least recently used session
    /// goes, if it has been idle long enough. False when no slot can be had.
    fn make_room(&mut self, slots: usize, now: Instant) -> bool {
        if self.sessions.len() >= slots {
            let idle = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .filter(|(_, s)| now.saturating_duration_since(s.last_used) >= EVICTION_IDLE_MIN)
                .map(|(&id, _)| id);
            if let Some(id) = idle {
                self.sessions.remove(&id);
            }
        }
        self.sessions.len() < slots
    }

    /// A positive id not in use, naming this shard in its low bits.
    fn new_id(&mut self) -> i32 {
        loop {
            let sequence = self.next_sequence;
            self.next_sequence =
                self.next_sequence.wrapping_add(1) & ((1 << (31 - SHARD_BITS)) - 1);
            let id =
                ((sequence << SHARD_BITS) | (self.shard as u32 & ((1 << SHARD_BITS) - 1))) as i32;
            if id > 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

/// Epochs run 1..=i32::MAX, then wrap to 1 (0 and -1 have meanings of their own).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX { 1 } else { epoch + 1 }
}

fn key(version: i16, topic: &str, topic_id: Uuid, partition: i32) -> FetchKey {
    if version >= 13 {
        FetchKey {
            topic: String::new(),
            topic_id,
            partition,
        }
    } else {
        FetchKey {
            topic: topic.to_string(),
            topic_id: Uuid::default(),
            partition,
        }
    }
}

fn wanted_of(version: i16, request: &FetchRequest) -> Vec<Wanted> {
    request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| Wanted {
                key: key(version, &t.topic, t.topic_id, p.partition),
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes,
                current_leader_epoch: p.current_leader_epoch,
            })
        })
        .collect()
}

fn forgotten_of(version: i16, request: &FetchRequest) -> Vec<FetchKey> {
    request
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |&p| key(version, &t.topic, t.topic_id, p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use sluice_net::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};

    use super::*;

    fn request(session_id: i32, epoch: i32, partitions: &[(i32, i64)]) -> FetchRequest {
        FetchRequest {
            session_id,
            session_epoch: epoch,
            topics: vec![FetchTopic {
                topic: "t".into(),
                partitions: partitions
                    .iter()
                    .map(|&(partition, fetch_offset)| FetchPartition {
                        partition,
                        fetch_offset,
                        partition_max_bytes: 1000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn offsets(plan: &FetchPlan) -> Vec<(i32, i64)> {
        plan.wanted
            .iter()
            .map(|w| (w.key.partition, w.fetch_offset))
            .collect()
    }

    fn sent(high_watermark: i64) -> Sent {
        Sent {
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset: 0,
        }
    }

    #[test]
    fn a_session_keeps_its_partitions_and_takes_only_changes() {
        let now = Instant::now();
        let mut sessions = FetchSessions::new(3);
        let full = sessions
            .begin(12, &request(0, 0, &[(0, 5), (1, 7)]), 10, now)
            .unwrap();
        assert!(full.session_id > 0 && !full.incremental);
        assert_eq!(full.session_id & 0x3ff, 3, "the id names its shard");
        let id = full.session_id;
        let key = |partition| key(12, "t", Uuid::default(), partition);
        assert_eq!(
            sessions.finish(
                id,
                false,
                &[(key(0), sent(5), false), (key(1), sent(9), true)]
            ),
            vec![true, true]
        );
        // Epoch 1 moves partition 1 on and adds partition 2.
        let next = sessions
            .begin(12, &request(id, 1, &[(1, 9), (2, 0)]), 10, now)
            .unwrap();
        assert!(next.incremental);
        assert_eq!(offsets(&next), vec![(0, 5), (1, 9), (2, 0)]);
        // Only news is sent: partition 0 is as it was, 1's high watermark moved, 2 is new.
        assert_eq!(
            sessions.finish(
                id,
                true,
                &[
                    (key(0), sent(5), false),
                    (key(1), sent(10), false),
                    (key(2), sent(0), false)
                ]
            ),
            vec![false, true, true]
        );
        // A stale or repeated epoch is refused; an unknown session too.
        assert_eq!(
            sessions
                .begin(12, &request(id, 1, &[]), 10, now)
                .unwrap_err(),
            ErrorCode::InvalidFetchSessionEpoch
        );
        assert_eq!(
            sessions
                .begin(12, &request(id + 1, 2, &[]), 10, now)
                .unwrap_err(),
            ErrorCode::FetchSessionIdNotFound
        );
        // Forgetting a partition drops it; epoch -1 closes the session.
        let mut forget = request(id, 2, &[]);
        forget.forgotten_topics_data = vec![ForgottenTopic {
            topic: "t".into(),
            partitions: vec![0],
            ..Default::default()
        }];
        let next = sessions.begin(12, &forget, 10, now).unwrap();
        assert_eq!(offsets(&next), vec![(1, 9), (2, 0)]);
        let closed = sessions
            .begin(12, &request(id, -1, &[(1, 9)]), 10, now)
            .unwrap();
        assert_eq!((closed.session_id, closed.incremental), (0, false));
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_full_cache_evicts_only_idle_sessions() {
        let start = Instant::now();
        let mut sessions = FetchSessions::new(0);
        let first = sessions
            .begin(12, &request(0, 0, &[(0, 0)]), 1, start)
            .unwrap();
        assert!(first.session_id > 0);
        let busy = sessions
            .begin(12, &request(0, 0, &[(0, 0)]), 1, start)
            .unwrap();
        assert_eq!(
            busy.session_id, 0,
            "no slot while the only session is in use"
        );
        let later = start + EVICTION_IDLE_MIN;
        let second = sessions
            .begin(12, &request(0, 0, &[(0, 0)]), 1, later)
            .unwrap();
        assert!(second.session_id > 0 && second.session_id != first.session_id);
        assert_eq!(sessions.len(), 1);
        assert_eq!(
            sessions
                .begin(12, &request(0, 0, &[(0, 0)]), 0, later)
                .unwrap()
                .session_id,
            0,
            "no slots: no sessions"
        );
    }
}
