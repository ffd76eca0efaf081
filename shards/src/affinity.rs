//! Which shard a connection's partitions live on, so that a connection the kernel accepted on
//! one shard can move to the shard that owns its partitions.
//!
//! Why: every shard accepts on the same port (SO_REUSEPORT) and the kernel picks the shard by
//! hashing the client's address, before the broker knows which partitions the client will
//! use. A producer of one partition that lands on the wrong shard has every batch validated
//! there and ordered on the owner, across cores: measured on 2 cores, each produce took about
//! 5× as long and the max rate fell by up to half. Kafka clients keep one connection per broker
//! for all their partitions, so once a connection's traffic clearly goes to one other shard,
//! serving it there removes the hop for good.

use std::cell::RefCell;

use sluice_net::Request;

use crate::shard::Shard;

/// Produce bytes a connection must have sent before it may move.
const PRODUCE_BYTES_BEFORE_MOVE: u64 = 4 << 20;
/// Fetched partitions (one per partition per Fetch) a consumer connection must have asked for
/// before it may move.
const FETCHES_BEFORE_MOVE: u64 = 256;
/// Share of the traffic, in percent, the other shard must own.
const OWNER_SHARE_PERCENT: u64 = 90;

/// Per-connection tally of the shards its produce and fetch traffic goes to.
#[derive(Debug, Default)]
pub struct ConnectionAffinity {
    tally: RefCell<Tally>,
}

#[derive(Debug, Default)]
struct Tally {
    produce_bytes: Vec<u64>,
    fetches: Vec<u64>,
}

impl ConnectionAffinity {
    /// Counts the partitions `request` touches by the shard that owns them.
    pub fn observe(&self, shard: &Shard, request: &Request) {
        let mut tally = self.tally.borrow_mut();
        let shards = shard.count;
        match request {
            Request::Produce(produce) => {
                let image = shard.image();
                for topic in &produce.topic_data {
                    for data in &topic.partition_data {
                        let bytes = data.records.as_ref().map_or(0, |r| r.len() as u64);
                        if let Some((owner, _)) = shard.locate(&image, &topic.name, data.index) {
                            add(&mut tally.produce_bytes, shards, owner, bytes);
                        }
                    }
                }
            }
            Request::Fetch(fetch) => {
                let image = shard.image();
                for topic in &fetch.topics {
                    let found = image
                        .topic(&topic.topic)
                        .or_else(|| image.topic_by_id(topic.topic_id.0));
                    let Some(found) = found else { continue };
                    for p in &topic.partitions {
                        let part = usize::try_from(p.partition)
                            .ok()
                            .and_then(|i| found.partitions.get(i));
                        if let Some(part) = part {
                            add(&mut tally.fetches, shards, shard.owner_of(part), 1);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The shard this connection should move to, if its traffic has gone almost all to one
    /// shard other than `here`: produce traffic decides when there is any, else fetches.
    pub fn destination(&self, here: usize) -> Option<usize> {
        let tally = self.tally.borrow();
        let produced: u64 = tally.produce_bytes.iter().sum();
        if produced > 0 {
            return dominant(&tally.produce_bytes, here, PRODUCE_BYTES_BEFORE_MOVE);
        }
        dominant(&tally.fetches, here, FETCHES_BEFORE_MOVE)
    }
}

fn add(counts: &mut Vec<u64>, shards: usize, owner: usize, amount: u64) {
    if counts.len() < shards {
        counts.resize(shards, 0);
    }
    if let Some(count) = counts.get_mut(owner) {
        *count += amount;
    }
}

/// The shard holding at least OWNER_SHARE_PERCENT of `counts` once they reach `minimum`,
/// when it is not `here`.
fn dominant(counts: &[u64], here: usize, minimum: u64) -> Option<usize> {
    let total: u64 = counts.iter().sum();
    if total < minimum {
        return None;
    }
    let (owner, &top) = counts.iter().enumerate().max_by_key(|(_, c)| **c)?;
    (owner != here && top.saturating_mul(100) >= total.saturating_mul(OWNER_SHARE_PERCENT))
        .then_some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_moves_only_when_one_other_shard_owns_nearly_all_its_traffic() {
        let mb = 1 << 20;
        assert_eq!(dominant(&[0, 3 * mb], 0, 4 * mb), None, "too little so far");
        assert_eq!(dominant(&[0, 8 * mb], 0, 4 * mb), Some(1));
        assert_eq!(dominant(&[0, 8 * mb], 1, 4 * mb), None, "already home");
        assert_eq!(
            dominant(&[2 * mb, 8 * mb], 0, 4 * mb),
            None,
            "split traffic stays"
        );
        assert_eq!(dominant(&[mb / 2, 8 * mb, 0], 2, 4 * mb), Some(1));
        assert_eq!(dominant(&[], 0, 0), None);
    }
}
