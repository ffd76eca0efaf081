//! The control plane: one thread owns the metadata store; shards send it commands.
//!
//! Metadata changes are rare and fsync'd, so they run on their own thread instead of
//! blocking an executor; shards read the current image through a lock-free `ArcSwap`.
//!
//! With a controller quorum (`--controller-quorum-voters`) the thread hands each command
//! to this node's `QuorumNode`, which runs on a small tokio runtime and applies it through
//! the quorum's leader; every image the quorum applies here is published to the shards.

use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use futures::channel::{mpsc, oneshot};
use sluice_metadata::quorum::{QuorumDescription, QuorumNode, QuorumStatus};
use sluice_metadata::{
    CommandOutcome, MetadataCommand, MetadataError, MetadataImage, MetadataStore,
};

/// Commands waiting for the controller; a full queue makes callers wait.
const COMMAND_QUEUE_MAX: usize = 1024;

type Reply = oneshot::Sender<Result<(Arc<MetadataImage>, CommandOutcome), MetadataError>>;

/// Why a command did not reach the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The store refused or failed the command.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The controller thread has stopped (shutdown).
    #[error("the metadata controller has stopped")]
    Stopped,
}

/// A cheap, cloneable way for any shard to submit metadata commands.
#[derive(Clone)]
pub struct ControllerHandle {
    commands: crossbeam_channel::Sender<(MetadataCommand, Reply)>,
    image: Arc<ArcSwap<MetadataImage>>,
    /// This node's part of the controller quorum and the runtime it runs on; None for a
    /// single node.
    quorum: Option<(tokio::runtime::Handle, Arc<QuorumNode>)>,
}

impl ControllerHandle {
    /// The current metadata image (lock-free).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.load_full()
    }

    /// What `read` finds in the current image. For the hot path: no reference count is taken
    /// on the image (`image` takes one, an atomic on a line every shard shares).
    pub fn with_image<T>(&self, read: impl FnOnce(&MetadataImage) -> T) -> T {
        read(&self.image.load())
    }

    /// True when this node leads the partition of `stream_id` (always, for a single node).
    /// For the hot path: no reference count is taken on the image.
    pub fn leads(&self, stream_id: u64) -> bool {
        self.image.load().leads(stream_id)
    }

    /// Applies `command` durably; the returned image is already visible to every shard.
    pub async fn submit(
        &self,
        command: MetadataCommand,
    ) -> Result<(Arc<MetadataImage>, CommandOutcome), ControllerError> {
        let (reply, answer) = oneshot::channel();
        // The queue is bounded; a full queue means the controller is far behind, which only
        // happens under an admin-request storm, so failing fast is the right answer.
        self.commands
            .try_send((command, reply))
            .map_err(|_| ControllerError::Stopped)?;
        Ok(answer.await.map_err(|_| ControllerError::Stopped)??)
    }

    /// The controller quorum as its leader sees it (DescribeQuorum); None for a single node.
    pub async fn describe_quorum(&self) -> Option<Result<QuorumDescription, MetadataError>> {
        let (runtime, node) = self.quorum.as_ref()?;
        let node = node.clone();
        // The quorum's RPCs need its tokio runtime; the answer comes back to the shard.
        let task = runtime.spawn(async move { node.describe().await });
        Some(
            task.await
                .unwrap_or_else(|e| Err(MetadataError::Failed(format!("quorum task: {e}")))),
        )
    }

    /// Takes this observer out of the controller quorum (a broker the quorum refused); a
    /// no-op for a single node.
    pub async fn leave_quorum(&self) -> Result<(), MetadataError> {
        let Some((runtime, node)) = self.quorum.as_ref() else {
            return Ok(());
        };
        let node = node.clone();
        runtime
            .spawn(async move { node.leave().await })
            .await
            .unwrap_or_else(|e| Err(MetadataError::Failed(format!("quorum task: {e}"))))
    }

    /// One request to another broker of the cluster (`crate::broker_client`), on the quorum's
    /// runtime; refused for a single node, which has no other broker.
    pub async fn call_broker(
        &self,
        endpoint: &str,
        version: i16,
        request: sluice_net::Request,
    ) -> Result<sluice_net::Response, String> {
        let Some((runtime, _)) = self.quorum.as_ref() else {
            return Err("a single node calls no other broker".to_string());
        };
        let endpoint = endpoint.to_string();
        runtime
            .spawn(async move { crate::broker_client::call(&endpoint, version, request).await })
            .await
            .unwrap_or_else(|e| Err(format!("broker call task: {e}")))
    }

    /// Starts this broker's heartbeats to the controller quorum, each with its partitions'
    /// traffic from `traffic` (for the balancer); a no-op for a single node.
    pub fn send_heartbeats(
        &self,
        broker_id: i32,
        interval: std::time::Duration,
        traffic: sluice_metadata::quorum::TrafficSource,
    ) {
        if let Some((runtime, node)) = self.quorum.as_ref() {
            runtime.spawn(node.send_heartbeats(broker_id, interval, traffic));
        }
    }

    /// What this node knows of the quorum now (for `/metrics`); None for a single node.
    pub fn quorum_status(&self) -> Option<QuorumStatus> {
        self.quorum.as_ref().map(|(_, node)| node.status())
    }
}

/// The running controller thread.
pub struct Controller {
    thread: Option<JoinHandle<()>>,
    stop: crossbeam_channel::Sender<()>,
}

impl Controller {
    /// Starts the controller over an opened store; each listener is told after applied
    /// commands that the image changed (so shards drop partitions of deleted topics). The
    /// notices coalesce: a listener's channel holds at most one, and the listener reads the
    /// newest image, so a slow shard never makes the queue grow (make it with
    /// `mpsc::channel(0)`).
    pub fn start(
        store: MetadataStore,
        listeners: Vec<mpsc::Sender<()>>,
    ) -> std::io::Result<(Controller, ControllerHandle)> {
        let image = Arc::new(ArcSwap::new(store.image()));
        let (commands, queue) = crossbeam_channel::bounded(COMMAND_QUEUE_MAX);
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let handle = ControllerHandle {
            commands,
            image: image.clone(),
            quorum: None,
        };
        let thread = std::thread::Builder::new()
            .name("sluice-controller".into())
            .spawn(move || run(store, queue, stopped, image, listeners))?;
        Ok((
            Controller {
                thread: Some(thread),
                stop,
            },
            handle,
        ))
    }

    /// Starts the controller over a running quorum node (its runtime is the one `node` was
    /// started on); listeners are told of every image the quorum applies, as in `start`.
    pub fn start_quorum(
        runtime: tokio::runtime::Runtime,
        node: QuorumNode,
        listeners: Vec<mpsc::Sender<()>>,
    ) -> std::io::Result<(Controller, ControllerHandle)> {
        let node = Arc::new(node);
        let image = Arc::new(ArcSwap::new(node.image()));
        let (commands, queue) = crossbeam_channel::bounded(COMMAND_QUEUE_MAX);
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let handle = ControllerHandle {
            commands,
            image: image.clone(),
            quorum: Some((runtime.handle().clone(), node.clone())),
        };
        runtime.spawn(publish_quorum_images(
            node.images(),
            image.clone(),
            listeners,
        ));
        let thread = std::thread::Builder::new()
            .name("sluice-controller".into())
            .spawn(move || run_quorum(runtime, node, queue, stopped, image))?;
        Ok((
            Controller {
                thread: Some(thread),
                stop,
            },
            handle,
        ))
    }

    /// Stops the thread (commands still queued are refused) and waits for it to end.
    pub fn join(mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    mut store: MetadataStore,
    queue: crossbeam_channel::Receiver<(MetadataCommand, Reply)>,
    stopped: crossbeam_channel::Receiver<()>,
    image: Arc<ArcSwap<MetadataImage>>,
    mut listeners: Vec<mpsc::Sender<()>>,
) {
    loop {
        let (command, reply) = crossbeam_channel::select! {
            recv(queue) -> next => match next {
                Ok(next) => next,
                Err(_) => return,
            },
            recv(stopped) -> _ => return,
        };
        let result = store.apply(command);
        if let Ok((new_image, _)) = &result {
            image.store(new_image.clone());
            for listener in &mut listeners {
                // Full: a notice is pending already, and it will read this image.
                let _ = listener.try_send(());
            }
        }
        let _ = reply.send(result);
    }
}

/// Hands each command to the quorum node; they run concurrently (the node orders them).
fn run_quorum(
    runtime: tokio::runtime::Runtime,
    node: Arc<QuorumNode>,
    queue: crossbeam_channel::Receiver<(MetadataCommand, Reply)>,
    stopped: crossbeam_channel::Receiver<()>,
    image: Arc<ArcSwap<MetadataImage>>,
) {
    loop {
        let (command, reply) = crossbeam_channel::select! {
            recv(queue) -> next => match next {
                Ok(next) => next,
                Err(_) => break,
            },
            recv(stopped) -> _ => break,
        };
        let node = node.clone();
        let image = image.clone();
        runtime.spawn(async move {
            let result = node.submit(command).await;
            if let Ok((new_image, _)) = &result {
                publish_newer(&image, new_image);
            }
            let _ = reply.send(result);
        });
    }
    runtime.block_on(node.shutdown());
    runtime.shutdown_background();
}

/// Publishes every image the quorum applies on this node, and tells the listeners.
async fn publish_quorum_images(
    mut images: tokio::sync::watch::Receiver<Arc<MetadataImage>>,
    image: Arc<ArcSwap<MetadataImage>>,
    mut listeners: Vec<mpsc::Sender<()>>,
) {
    while images.changed().await.is_ok() {
        let applied = images.borrow_and_update().clone();
        publish_newer(&image, &applied);
        for listener in &mut listeners {
            // Full: a notice is pending already, and it will read this image.
            let _ = listener.try_send(());
        }
    }
}

/// Stores `new` unless the published image is already as new (a command's answer and the
/// applied-image watch race to publish).
fn publish_newer(image: &ArcSwap<MetadataImage>, new: &Arc<MetadataImage>) {
    image.rcu(|current| {
        if current.epoch >= new.epoch {
            current.clone()
        } else {
            new.clone()
        }
    });
}
