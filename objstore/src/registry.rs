//! How the object tier changes metadata: through the single metadata
//! writer. The broker implements `Registry` over its controller handle
//! (`ControllerHandle::submit`); `StoreRegistry` wraps a `MetadataStore`
//! directly (tests, tools, a single-process embedding).

use std::future::Future;
use std::sync::{Arc, Mutex};

use sluice_metadata::{
    CommandOutcome, MetadataCommand, MetadataError, MetadataImage, MetadataStore,
};

/// Submits a metadata command; resolves to the image after it and what it
/// did, or why not. The future need not be `Send` (the broker's runs on its
/// shard).
pub trait Registry {
    fn submit(
        &self,
        command: MetadataCommand,
    ) -> impl Future<Output = Result<(Arc<MetadataImage>, CommandOutcome), RegistryError>>;
}

/// Why a registry did not confirm a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Refused: the command was not applied and never will be.
    #[error("{0}")]
    Refused(String),
    /// Not confirmed (no answer in time, a controller stopping, a failed write): the command
    /// may have been applied, or may be yet, so the objects it names must be kept.
    #[error("{0}")]
    Unconfirmed(String),
}

impl RegistryError {
    /// A metadata store's or controller's error: a refusal when
    /// `MetadataError::is_refusal` says so, unconfirmed otherwise.
    pub fn from_metadata(error: &MetadataError) -> RegistryError {
        if error.is_refusal() {
            RegistryError::Refused(error.to_string())
        } else {
            RegistryError::Unconfirmed(error.to_string())
        }
    }
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
    ) -> Result<(Arc<MetadataImage>, CommandOutcome), RegistryError> {
        self.lock()
            .apply(command)
            .map_err(|e| RegistryError::from_metadata(&e))
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
    ) -> Result<(Arc<MetadataImage>, CommandOutcome), RegistryError> {
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
        .await
        .map_err(|e| e.to_string())?
        .1
    {
        CommandOutcome::ObjectIdsAllocated {
            first_object_id,
            count: got,
        } if got == count => Ok(first_object_id),
        other => Err(format!("AllocateObjectIds answered {other:?}")),
    }
}
