//! The broker-wide stop signal: one oneshot per shard, shared by every task of that shard.

use futures::future::Shared;

/// Resolves when the shard must stop; cloned into every connection and background task.
pub type StopSignal = Shared<futures::channel::oneshot::Receiver<()>>;
