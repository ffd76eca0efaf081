//! How the object tier changes metadata: through the single metadata
//! writer. The broker implements `Registry` over its controller handle
//! (`ControllerHandle::submit`); `StoreRegistry` wraps a `MetadataStore`
//! directly (tests, tools, a single-process embedding).

use std::future::Future;
use std::sync::{Arc, Mutex};

use sluice_metadata::{CommandOutcome, MetadataCommand, MetadataImage, MetadataStore};

/// Submits a metadata command; resolves to the image after it and what it
/// did, or the refusal's message. The future need not be `Send` (the
/// broker's runs on its shard).
pub trait Registry {
    fn submit(
        &self,
        command: MetadataCommand,
    ) -> impl Future<Output = Result<(Arc<MetadataImage>, CommandOutcome), String>>;
}

/// A `Registry` over a `MetadataStore` owned here. The store does blocking
/// file I/O (fsync), so this belongs on a thread that may block, not on a
/// shard's executor.
#[derive(Debug, Clone)]
pub struct StoreRegistry {
    store: Arc<Mutex<MetadataStore>>,
}

impl StoreRegistry {
    pub fn new(store: MetadataStore) -> StoreRegistry {
        StoreRegistry {
            store: Arc::new(Mutex::new(store)),
        }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.lock().image()
    }

    /// Runs a command now (blocking).
    pub fn apply(
        &self,
        command: MetadataCommand,
    ) -> Result<(Arc<MetadataImage>, CommandOutcome), String> {
        self.lock().apply(command).map_err(|e| e.to_string())
    }

    /// Gives the store back (e.g. to reopen it in a restart test).
    pub fn into_inner(self) -> Option<MetadataStore> {
        Arc::into_inner(self.store).map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MetadataStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Registry for StoreRegistry {
    async fn submit(
        &self,
        command: MetadataCommand,
    ) -> Result<(Arc<MetadataImage>, CommandOutcome), String> {
        self.apply(command)
    }
}

/// Allocates `count` object ids; returns the first.
pub(crate) async fn allocate_object_ids<R: Registry>(
    registry: &R,
    count: u32,
) -> Result<u64, String> {
    match registry
        .submit(MetadataCommand::AllocateObjectIds { count })
        .await?
        .1
    {
        CommandOutcome::ObjectIdsAllocated {
            first_object_id,
            count: got,
        } if got == count => Ok(first_object_id),
        other => Err(format!("AllocateObjectIds answered {other:?}")),
    }
}
