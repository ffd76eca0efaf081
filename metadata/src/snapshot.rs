//! Snapshots: the whole image, rkyv-encoded, in `snapshot-<epoch>.rkyv`,
//! written through a temporary file, fsync and an atomic rename.
//!
//! File layout: `[magic 8][format_version u32][crc32c u32][payload_len u64][payload]`,
//! little endian; the payload is the rkyv encoding of `SnapshotV10` (format 10: V9 with the
//! ACLs and the client quotas; V9 was V8 with the users' SCRAM credentials; V8 was V7 with the partition moves; V7 was V6 with the
//! brokers' WALs and their holders; V6 was V5 with the brokers' fencing and the partitions'
//! leaders; V5 was V4 plus the
//! brokers registered in a controller quorum; V4 was V3 plus the
//! log cleaner's marks; V3 was V2 plus each stream's uploads, `uploads.rs`; V2 was V1 plus
//! the object registry), checked with bytecheck on load, after the CRC. Versions 1 to 9
//! still load (with an empty registry, no uploads, no cleaner marks, no brokers, no WALs, no
//! moves, no SCRAM credentials, no ACLs, no client quotas; a format 5 broker leads every partition).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::acls::AclBinding;
use crate::brokers::{BrokerParts, BrokerWal};
use crate::error::MetadataError;
use crate::image::{MetadataImage, TopicImage};
use crate::limits::SNAPSHOT_BYTES_MAX;
use crate::objects::RegistryParts;
use crate::quotas::QuotaChange;
use crate::scram::ScramUserCredential;
use crate::uploads::{StreamCleaned, StreamUploadsPart};

const MAGIC: &[u8; 8] = b"SLUICEMD";
const FORMAT_VERSION: u32 = 10;
/// Format 9: format 8 with the users' SCRAM credentials.
const FORMAT_VERSION_V9: u32 = 9;
/// Format 8: format 7 with the partition moves.
const FORMAT_VERSION_V8: u32 = 8;
/// Format 7: format 6 with the brokers' WALs.
const FORMAT_VERSION_V7: u32 = 7;
/// The format before the brokers' WALs; still read.
const FORMAT_VERSION_V6: u32 = 6;
/// The format before fencing and partition leaders; still read.
const FORMAT_VERSION_V5: u32 = 5;
/// The format before the registered brokers; still read.
const FORMAT_VERSION_V4: u32 = 4;
/// The format before the log cleaner's marks; still read.
const FORMAT_VERSION_V3: u32 = 3;
/// The format before the streams' uploads; still read.
const FORMAT_VERSION_V2: u32 = 2;
/// The format before the object registry; still read.
const FORMAT_VERSION_V1: u32 = 1;
const HEADER_BYTES: usize = 24;
const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".rkyv";

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV1 {
    cluster_id: String,
    epoch: u64,
    next_producer_id: i64,
    next_stream_id: u64,
    broker_configs: BTreeMap<String, String>,
    topics: Vec<TopicImage>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV2 {
    cluster_id: String,
    epoch: u64,
    next_producer_id: i64,
    next_stream_id: u64,
    broker_configs: BTreeMap<String, String>,
    topics: Vec<TopicImage>,
    objects: RegistryParts,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV3 {
    cluster_id: String,
    epoch: u64,
    next_producer_id: i64,
    next_stream_id: u64,
    broker_configs: BTreeMap<String, String>,
    topics: Vec<TopicImage>,
    objects: RegistryParts,
    uploads: Vec<StreamUploadsPart>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV4 {
    cluster_id: String,
    epoch: u64,
    next_producer_id: i64,
    next_stream_id: u64,
    broker_configs: BTreeMap<String, String>,
    topics: Vec<TopicImage>,
    objects: RegistryParts,
    uploads: Vec<StreamUploadsPart>,
    cleaned: Vec<StreamCleaned>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV5 {
    cluster_id: String,
    epoch: u64,
    next_producer_id: i64,
    next_stream_id: u64,
    broker_configs: BTreeMap<String, String>,
    topics: Vec<TopicImage>,
    objects: RegistryParts,
    uploads: Vec<StreamUploadsPart>,
    cleaned: Vec<StreamCleaned>,
    brokers: Vec<(i32, String)>,
}

/// Format 6: format 5 with the brokers' fencing, the partitions' leaders and the
/// coordinator broker (`brokers.rs`) in place of the bare endpoints.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV6 {
    base: SnapshotV5,
    brokers: BrokerParts,
}

/// Format 7: format 6 with the brokers' WALs (`brokers.rs`).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV7 {
    base: SnapshotV6,
    wals: Vec<(i32, BrokerWal)>,
}

/// Format 8: format 7 with the partition moves asked for and not done (`brokers.rs`).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV8 {
    base: SnapshotV7,
    moves: Vec<(u64, i32)>,
}

/// Format 9: format 8 with the users' SCRAM credentials (`scram.rs`).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV9 {
    base: SnapshotV8,
    scram: Vec<ScramUserCredential>,
}

/// Format 10: format 9 with the ACLs (`acls.rs`) and the client quotas (`quotas.rs`, each
/// value set as one part).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotV10 {
    base: SnapshotV9,
    acls: Vec<AclBinding>,
    client_quotas: Vec<QuotaChange>,
}

pub(crate) fn snapshot_name(epoch: u64) -> String {
    format!("{PREFIX}{epoch:020}{SUFFIX}")
}

/// The epoch in a snapshot's file name.
pub(crate) fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// Writes the image's snapshot durably and returns its path.
pub(crate) fn write(dir: &Path, image: &MetadataImage) -> Result<PathBuf, MetadataError> {
    let bytes = encode(image)?;
    let name = snapshot_name(image.epoch);
    write_atomically(dir, &name, &bytes)?;
    Ok(dir.join(name))
}

/// The image as a snapshot file's bytes (also what the controller quorum ships to a
/// follower that is too far behind).
pub(crate) fn encode(image: &MetadataImage) -> Result<Vec<u8>, MetadataError> {
    let snapshot = SnapshotV10 {
        base: SnapshotV9 {
            base: SnapshotV8 {
                base: SnapshotV7 {
                    base: SnapshotV6 {
                        base: SnapshotV5 {
                            cluster_id: image.cluster_id.clone(),
                            epoch: image.epoch,
                            next_producer_id: image.next_producer_id,
                            next_stream_id: image.next_stream_id,
                            broker_configs: image.broker_configs.clone(),
                            topics: image.topics.values().cloned().collect(),
                            objects: image.registry_parts(),
                            uploads: image.upload_parts(),
                            cleaned: image.cleaned_parts(),
                            // Format 6 keeps the brokers in `brokers` below.
                            brokers: Vec::new(),
                        },
                        brokers: image.broker_parts(),
                    },
                    wals: image.wal_parts(),
                },
                moves: image.move_parts(),
            },
            scram: image.scram_parts(),
        },
        acls: image.acl_bindings().collect(),
        client_quotas: image.client_quota_parts(),
    };
    let payload = rkyv::to_bytes::<rancor::Error>(&snapshot)
        .map_err(|e| MetadataError::Corrupt(format!("cannot encode snapshot: {e}")))?;
    let bytes = frame(FORMAT_VERSION, &payload);
    // Check the snapshot just before it is written, as it will be read back.
    debug_assert_eq!(
        decode(&bytes, image.node_id, image.epoch).as_ref(),
        Ok(image)
    );
    Ok(bytes)
}

/// `[magic][version][crc][len][payload]`.
fn frame(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Loads and checks a snapshot; `epoch` is the one in its file name.
pub(crate) fn load(path: &Path, node_id: i32, epoch: u64) -> Result<MetadataImage, String> {
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > SNAPSHOT_BYTES_MAX {
        return Err(format!(
            "{}: {len} bytes is over {SNAPSHOT_BYTES_MAX} (SNAPSHOT_BYTES_MAX)",
            path.display()
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    decode(&bytes, node_id, epoch).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `dir/name` so that the file is either absent or whole:
/// temporary file, fsync, rename, directory fsync.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), MetadataError> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let target = dir.join(name);
    let result = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|e| MetadataError::io(&tmp, e));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &target).map_err(|e| MetadataError::io(&target, e))?;
    sync_dir(dir)
}

/// Makes a directory's entries (creates, renames, removes) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), MetadataError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| MetadataError::io(dir, e))
}

/// Temporary files end with this; leftovers are removed at open.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Checks and decodes a snapshot's bytes; `epoch` is the one it must hold.
pub(crate) fn decode(bytes: &[u8], node_id: i32, epoch: u64) -> Result<MetadataImage, String> {
    if bytes.len() < HEADER_BYTES || &bytes[0..8] != MAGIC {
        return Err("not a Sluice metadata snapshot".to_string());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if ![
        FORMAT_VERSION_V1,
        FORMAT_VERSION_V2,
        FORMAT_VERSION_V3,
        FORMAT_VERSION_V4,
        FORMAT_VERSION_V5,
        FORMAT_VERSION_V6,
        FORMAT_VERSION_V7,
        FORMAT_VERSION_V8,
        FORMAT_VERSION_V9,
        FORMAT_VERSION,
    ]
    .contains(&version)
    {
        return Err(format!(
            "snapshot format version {version}, expected {FORMAT_VERSION_V1} to {FORMAT_VERSION}"
        ));
    }
    let crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let payload_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() as u64 != payload_len {
        return Err(format!(
            "payload is {} bytes, header says {payload_len}",
            payload.len()
        ));
    }
    if crc32c::crc32c(payload) != crc {
        return Err("checksum mismatch".to_string());
    }
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let invalid = |e: rancor::Error| format!("invalid snapshot payload: {e}");
    let v5 = match version {
        FORMAT_VERSION | FORMAT_VERSION_V9 | FORMAT_VERSION_V8 | FORMAT_VERSION_V7
        | FORMAT_VERSION_V6 => None,
        FORMAT_VERSION_V1 => Some({
            let v1 = rkyv::from_bytes::<SnapshotV1, rancor::Error>(&aligned).map_err(invalid)?;
            SnapshotV5 {
                cluster_id: v1.cluster_id,
                epoch: v1.epoch,
                next_producer_id: v1.next_producer_id,
                next_stream_id: v1.next_stream_id,
                broker_configs: v1.broker_configs,
                topics: v1.topics,
                objects: RegistryParts::empty(),
                uploads: Vec::new(),
                cleaned: Vec::new(),
                brokers: Vec::new(),
            }
        }),
        FORMAT_VERSION_V2 => Some({
            let v2 = rkyv::from_bytes::<SnapshotV2, rancor::Error>(&aligned).map_err(invalid)?;
            SnapshotV5 {
                cluster_id: v2.cluster_id,
                epoch: v2.epoch,
                next_producer_id: v2.next_producer_id,
                next_stream_id: v2.next_stream_id,
                broker_configs: v2.broker_configs,
                topics: v2.topics,
                objects: v2.objects,
                uploads: Vec::new(),
                cleaned: Vec::new(),
                brokers: Vec::new(),
            }
        }),
        FORMAT_VERSION_V3 => Some({
            let v3 = rkyv::from_bytes::<SnapshotV3, rancor::Error>(&aligned).map_err(invalid)?;
            SnapshotV5 {
                cluster_id: v3.cluster_id,
                epoch: v3.epoch,
                next_producer_id: v3.next_producer_id,
                next_stream_id: v3.next_stream_id,
                broker_configs: v3.broker_configs,
                topics: v3.topics,
                objects: v3.objects,
                uploads: v3.uploads,
                cleaned: Vec::new(),
                brokers: Vec::new(),
            }
        }),
        FORMAT_VERSION_V4 => Some({
            let v4 = rkyv::from_bytes::<SnapshotV4, rancor::Error>(&aligned).map_err(invalid)?;
            SnapshotV5 {
                cluster_id: v4.cluster_id,
                epoch: v4.epoch,
                next_producer_id: v4.next_producer_id,
                next_stream_id: v4.next_stream_id,
                broker_configs: v4.broker_configs,
                topics: v4.topics,
                objects: v4.objects,
                uploads: v4.uploads,
                cleaned: v4.cleaned,
                brokers: Vec::new(),
            }
        }),
        _ => Some(rkyv::from_bytes::<SnapshotV5, rancor::Error>(&aligned).map_err(invalid)?),
    };
    if version == FORMAT_VERSION {
        let v10 = rkyv::from_bytes::<SnapshotV10, rancor::Error>(&aligned).map_err(invalid)?;
        let parts = LaterParts {
            scram: v10.base.scram,
            acls: v10.acls,
            client_quotas: v10.client_quotas,
        };
        return from_snapshot(v10.base.base, parts, node_id, epoch);
    }
    if version == FORMAT_VERSION_V9 {
        let v9 = rkyv::from_bytes::<SnapshotV9, rancor::Error>(&aligned).map_err(invalid)?;
        let parts = LaterParts {
            scram: v9.scram,
            ..LaterParts::default()
        };
        return from_snapshot(v9.base, parts, node_id, epoch);
    }
    let v8 = match v5 {
        None if version == FORMAT_VERSION_V8 => {
            rkyv::from_bytes::<SnapshotV8, rancor::Error>(&aligned).map_err(invalid)?
        }
        None if version == FORMAT_VERSION_V7 => SnapshotV8 {
            base: rkyv::from_bytes::<SnapshotV7, rancor::Error>(&aligned).map_err(invalid)?,
            moves: Vec::new(),
        },
        None => SnapshotV8 {
            base: SnapshotV7 {
                base: rkyv::from_bytes::<SnapshotV6, rancor::Error>(&aligned).map_err(invalid)?,
                wals: Vec::new(),
            },
            moves: Vec::new(),
        },
        Some(mut v5) => {
            let streams: Vec<u64> = v5
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.stream_id))
                .collect();
            let brokers = BrokerParts::of_format_5(std::mem::take(&mut v5.brokers), &streams);
            SnapshotV8 {
                base: SnapshotV7 {
                    base: SnapshotV6 { base: v5, brokers },
                    wals: Vec::new(),
                },
                moves: Vec::new(),
            }
        }
    };
    from_snapshot(v8, LaterParts::default(), node_id, epoch)
}

/// The parts formats after 8 added, empty in older formats.
#[derive(Default)]
struct LaterParts {
    scram: Vec<ScramUserCredential>,
    acls: Vec<AclBinding>,
    client_quotas: Vec<QuotaChange>,
}

/// The image of a decoded snapshot, in the newest format's parts.
fn from_snapshot(
    v8: SnapshotV8,
    later: LaterParts,
    node_id: i32,
    epoch: u64,
) -> Result<MetadataImage, String> {
    let LaterParts {
        scram,
        acls,
        client_quotas,
    } = later;
    let SnapshotV8 {
        base:
            SnapshotV7 {
                base:
                    SnapshotV6 {
                        base: snapshot,
                        brokers,
                    },
                wals,
            },
        moves,
    } = v8;
    if snapshot.epoch != epoch {
        return Err(format!(
            "snapshot holds epoch {}, its name says {epoch}",
            snapshot.epoch
        ));
    }
    MetadataImage::from_parts(
        snapshot.cluster_id,
        node_id,
        snapshot.epoch,
        snapshot.topics,
        snapshot.broker_configs,
        snapshot.next_producer_id,
        snapshot.next_stream_id,
        snapshot.objects,
        snapshot.uploads,
        snapshot.cleaned,
        brokers,
        wals,
        moves,
        scram,
        acls,
        client_quotas,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 snapshot (before the object registry) still loads.
    #[test]
    fn version_1_loads_with_an_empty_registry() {
        let v1 = SnapshotV1 {
            cluster_id: "c".to_string(),
            epoch: 7,
            next_producer_id: 5,
            next_stream_id: 1,
            broker_configs: BTreeMap::new(),
            topics: Vec::new(),
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v1).unwrap();
        let image = decode(&frame(FORMAT_VERSION_V1, &payload), 1, 7).unwrap();
        assert_eq!(image.epoch, 7);
        assert_eq!(image.next_producer_id, 5);
        assert_eq!(image.next_object_id(), crate::FIRST_OBJECT_ID);
        assert_eq!(image.objects().count(), 0);
    }

    /// A version 2 snapshot (before the streams' uploads) still loads, with none.
    #[test]
    fn version_2_loads_without_uploads() {
        let v2 = SnapshotV2 {
            cluster_id: "c".to_string(),
            epoch: 9,
            next_producer_id: 5,
            next_stream_id: 1,
            broker_configs: BTreeMap::new(),
            topics: Vec::new(),
            objects: RegistryParts::empty(),
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v2).unwrap();
        let image = decode(&frame(FORMAT_VERSION_V2, &payload), 1, 9).unwrap();
        assert_eq!(image.epoch, 9);
        assert!(image.producer_states(1).is_none());
    }

    /// A version 3 snapshot (before the log cleaner's marks) still loads, with none.
    #[test]
    fn version_3_loads_without_cleaner_marks() {
        let v3 = SnapshotV3 {
            cluster_id: "c".to_string(),
            epoch: 11,
            next_producer_id: 5,
            next_stream_id: 1,
            broker_configs: BTreeMap::new(),
            topics: Vec::new(),
            objects: RegistryParts::empty(),
            uploads: Vec::new(),
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v3).unwrap();
        let image = decode(&frame(FORMAT_VERSION_V3, &payload), 1, 11).unwrap();
        assert_eq!(image.epoch, 11);
        assert_eq!(image.cleaned_end_offset(1), 0);
    }

    /// A version 4 snapshot (before the registered brokers) still loads, with none.
    #[test]
    fn version_4_loads_without_brokers() {
        let v4 = SnapshotV4 {
            cluster_id: "c".to_string(),
            epoch: 13,
            next_producer_id: 5,
            next_stream_id: 1,
            broker_configs: BTreeMap::new(),
            topics: Vec::new(),
            objects: RegistryParts::empty(),
            uploads: Vec::new(),
            cleaned: Vec::new(),
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v4).unwrap();
        let image = decode(&frame(FORMAT_VERSION_V4, &payload), 1, 13).unwrap();
        assert_eq!(image.epoch, 13);
        assert!(image.brokers().is_empty());
    }

    /// A version 5 snapshot (one broker, no leaders) still loads: its broker leads every
    /// partition, unfenced, and coordinates.
    #[test]
    fn version_5_loads_with_its_broker_leading_every_partition() {
        let topic = TopicImage {
            name: "t".to_string(),
            id: [1; 16],
            partitions: vec![crate::PartitionImage {
                index: 0,
                shard: 0,
                stream_id: 1,
                log_start_offset: 0,
            }],
            configs: BTreeMap::new(),
        };
        let v5 = SnapshotV5 {
            cluster_id: "c".to_string(),
            epoch: 15,
            next_producer_id: 5,
            next_stream_id: 2,
            broker_configs: BTreeMap::new(),
            topics: vec![topic],
            objects: RegistryParts::empty(),
            uploads: Vec::new(),
            cleaned: Vec::new(),
            brokers: vec![(4, "h:9092".to_string())],
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v5).unwrap();
        let image = decode(&frame(FORMAT_VERSION_V5, &payload), 4, 15).unwrap();
        assert_eq!(image.leadership(1).leader, Some(4));
        assert!(image.leads(1));
        assert_eq!(image.coordinator(), Some(4));
        assert_eq!(image.brokers()[&4].endpoint, "h:9092");
        // And it is written back in the current format and reads the same.
        let bytes = encode(&image).unwrap();
        assert_eq!(decode(&bytes, 4, 15).unwrap(), image);

        // As format 6 (no WALs) it loads too; a registered WAL then survives format 7.
        let v6 = SnapshotV6 {
            base: SnapshotV5 {
                brokers: Vec::new(),
                ..rkyv::from_bytes::<SnapshotV5, rancor::Error>(&payload).unwrap()
            },
            brokers: image.broker_parts(),
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v6).unwrap();
        let mut image = decode(&frame(FORMAT_VERSION_V6, &payload), 4, 15).unwrap();
        assert_eq!(image.broker_wal(4), None);
        image.brokers.register_wal(4, &["/wal/4".to_string()], 4096);
        let bytes = encode(&image).unwrap();
        let read = decode(&bytes, 4, 15).unwrap();
        assert_eq!(read.broker_wal(4).map(|w| w.epoch), Some(1));
        assert_eq!(read, image);

        // As format 7 (no moves) it loads too; a move asked for then survives format 8.
        let v7 = SnapshotV7 {
            base: rkyv::from_bytes::<SnapshotV6, rancor::Error>(&payload).unwrap(),
            wals: image.wal_parts(),
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v7).unwrap();
        let mut image = decode(&frame(FORMAT_VERSION_V7, &payload), 4, 15).unwrap();
        assert_eq!(image.broker_wal(4).map(|w| w.epoch), Some(1));
        assert_eq!(image.move_target(1), None);
        image.brokers.start_move(1, 4);
        let read = decode(&encode(&image).unwrap(), 4, 15).unwrap();
        assert_eq!(read.move_target(1), Some(4));
        assert_eq!(read, image);

        // As format 8 (no SCRAM credentials) it loads too; credentials then survive format 9.
        let v8 = SnapshotV8 {
            base: rkyv::from_bytes::<SnapshotV7, rancor::Error>(&payload).unwrap(),
            moves: image.move_parts(),
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v8).unwrap();
        let image = decode(&frame(FORMAT_VERSION_V8, &payload), 4, 15).unwrap();
        assert_eq!(image.move_target(1), Some(4));
        assert_eq!(image.scram_users().count(), 0);
        let mechanism = crate::ScramMechanism::Sha512;
        let record = crate::MetadataRecord::AlterScramCredentials {
            upserted: vec![crate::ScramUserCredential {
                user: "alice".to_string(),
                mechanism,
                credential: crate::ScramCredential::from_password(
                    mechanism,
                    b"salt".to_vec(),
                    b"pw",
                    4096,
                ),
            }],
            deleted: Vec::new(),
        };
        let (image, _) = image.apply(16, &record).unwrap();
        let read = decode(&encode(&image).unwrap(), 4, 16).unwrap();
        assert!(
            read.scram_credential("alice", mechanism)
                .unwrap()
                .matches_password(mechanism, b"pw")
        );
        assert_eq!(read, image);

        // As format 9 (no ACLs) it loads too; ACLs then survive format 10.
        let v9 = SnapshotV9 {
            base: rkyv::from_bytes::<SnapshotV8, rancor::Error>(&payload).unwrap(),
            scram: image.scram_parts(),
        };
        let payload = rkyv::to_bytes::<rancor::Error>(&v9).unwrap();
        let image = decode(&frame(FORMAT_VERSION_V9, &payload), 4, 15).unwrap();
        assert!(image.scram_credential("alice", mechanism).is_some());
        assert!(image.has_no_acls());
        let binding = crate::AclBinding {
            pattern: crate::AclPattern {
                resource_type: crate::AclResourceType::Topic,
                pattern_type: crate::AclPatternType::Prefixed,
                name: "orders".to_string(),
            },
            entry: crate::AclEntry {
                principal: "User:alice".to_string(),
                host: "*".to_string(),
                operation: crate::AclOperation::Read,
                permission: crate::AclPermission::Allow,
            },
        };
        let record = crate::MetadataRecord::AlterAcls {
            created: vec![binding.clone()],
            deleted: Vec::new(),
        };
        let (image, _) = image.apply(16, &record).unwrap();
        let read = decode(&encode(&image).unwrap(), 4, 16).unwrap();
        assert_eq!(read.acl_bindings().collect::<Vec<_>>(), vec![binding]);
        assert_eq!(read, image);

        // Client quotas survive format 10 too.
        assert!(image.client_quotas().is_empty());
        let entity = crate::QuotaEntity {
            user: Some(crate::EntityName::Named("alice".to_string())),
            client_id: Some(crate::EntityName::Default),
        };
        let record = crate::MetadataRecord::AlterClientQuotas {
            changes: vec![crate::QuotaChange {
                entity: entity.clone(),
                key: crate::QuotaKey::ProducerByteRate,
                value: Some(crate::QuotaValue::new(10_485_760.0)),
            }],
        };
        let (image, _) = image.apply(17, &record).unwrap();
        let read = decode(&encode(&image).unwrap(), 4, 17).unwrap();
        assert_eq!(
            read.client_quotas()[&entity][&crate::QuotaKey::ProducerByteRate].get(),
            10_485_760.0
        );
        assert_eq!(read, image);
    }
}
