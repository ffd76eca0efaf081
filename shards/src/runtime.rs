//! Start-up and shutdown: the controller thread, one pinned glommio executor per shard, the
//! channel mesh between shards, and the listening sockets (SO_REUSEPORT, one per shard).

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::channel::{mpsc, oneshot};
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Gate, Semaphore};
use glommio::{LocalExecutorBuilder, Placement};
use sluice_metadata::quorum::{QuorumConfig, QuorumNode, cluster_id_of_voters};
use sluice_metadata::{MetadataCommand, MetadataStore, WalLocation};
use sluice_objstore::ObjectStore;

use crate::admin_http::AdminServer;
use crate::barrier::ShardBarrier;
use crate::builder::{
    BuiltShard, MESH_QUEUE_DEPTH, ShardBuilder, restore_groups, spawn_image_changes, spawn_uploads,
};
use crate::config::{BrokerConfig, is_block_device};
use crate::connection::{self, Arrival};
use crate::connection_limits::ConnectionLimits;
use crate::controller::{Controller, ControllerError, ControllerHandle};
use crate::data_dir_lock::{DataDirLock, LockError};
use crate::group::limits::GroupLimits;
use crate::log_levels::LogLevels;
use crate::messaging::ShardRequest;
use crate::metrics::{BrokerMetrics, ShardMetrics};
use crate::router;
use crate::security::{ListenerConfig, ListenerContext, SecurityProtocol, TlsAcceptor};
use crate::shard::Shard;
use crate::startup_wait::retry_while_busy;
use crate::stop::StopSignal;
use crate::storage::PartitionStore;

/// Memory glommio registers per executor for I/O buffers, when the memlock limit allows.
const IO_MEMORY_BYTES_DEFAULT: usize = 10 << 20;

/// How often, at most, a shard evicts uploaded batches from the log cache while a frame or
/// batch waits for its memory pool.
const POOL_SHORTAGE_CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// A shortage this soon after the previous one is the same wait going on.
const POOL_SHORTAGE_PERSISTS: Duration = Duration::from_millis(100);

/// Allocations from this size on are mmap'd by glibc and unmapped when freed. glibc raises
/// its threshold (up to 32 MiB) each time it frees a mapped block, after which blocks of
/// mixed sizes land in its arenas and fragment them: RSS grew without bound in the memory
/// soak. Fixing it turns that adjustment off.
const MALLOC_MMAP_THRESHOLD_BYTES: i32 = 128 << 10;

/// The smallest io_memory glommio can work with.
const IO_MEMORY_BYTES_MIN: usize = 256 << 10;

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The metadata store could not be opened.
    #[error("metadata: {0}")]
    Metadata(#[from] sluice_metadata::MetadataError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// A shard failed to start (its WAL, its executor).
    #[error("shard {shard}: {reason}")]
    Shard {
        /// The shard index.
        shard: usize,
        /// What failed.
        reason: String,
    },
    /// The configuration cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// The object store could not be opened or listed.
    #[error("object store: {0}")]
    ObjectStore(String),
    /// The admin HTTP server could not start.
    #[error("admin server on {addr}: {source}")]
    Admin {
        /// The admin address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The data dir (or the WAL) is another process's, or its lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
}

/// A running broker.
pub struct Broker {
    local_addr: SocketAddr,
    listener_addrs: Vec<SocketAddr>,
    stops: Vec<oneshot::Sender<()>>,
    executors: Vec<glommio::ExecutorJoinHandle<()>>,
    controller: Option<Controller>,
    admin: Option<AdminServer>,
    // Held until every shard has closed its WAL (`stop`).
    lock: Option<DataDirLock>,
}

impl Broker {
    /// Starts every shard and returns once all of them accept connections.
    pub fn start(config: BrokerConfig) -> Result<Broker, StartError> {
        let config = Arc::new(config);
        let shard_count = config.shard_count();
        fix_malloc_mmap_threshold();
        // First of all: nothing below may bind a port or write a file while another process
        // owns the data dir.
        let lock = DataDirLock::acquire(
            &config.data_dir,
            config.wal_path.as_deref(),
            config.lock_wait,
        )?;
        check_wal_layout(&config, shard_count)?;
        std::fs::create_dir_all(config.data_dir.join("metadata")).map_err(|source| {
            StartError::DataDir {
                path: config.data_dir.clone(),
                source,
            }
        })?;
        if let Some(levels) = &config.log_levels {
            restore_log_levels(levels.as_ref(), &config.data_dir)?;
        }
        let metadata = open_metadata(&config, true)?;
        let objects = open_object_store(&config)?;
        // Before any upload starts, so every object above the registry's ids is an orphan. New
        // uploads take ids above these, so a store that is down now only leaves garbage. In a
        // cluster, another broker may be between the put and the commit of an object: its
        // orphans are left (garbage, never a loss) until a broker starts alone.
        let image = metadata.image();
        let alone = image.brokers().keys().all(|id| *id == config.node_id);
        match alone.then(|| crate::tier::delete_orphans(&objects, &image)) {
            None | Some(Ok(0)) => {}
            Some(Ok(orphans)) => {
                tracing::info!(orphans, "deleted objects a crash left uncommitted")
            }
            Some(Err(error)) => tracing::warn!(%error, "orphaned objects not cleaned up"),
        }
        let metrics = Arc::new(BrokerMetrics::new(shard_count, objects.clone()));
        // One of each per broker: the caps count across shards.
        let group_limits = GroupLimits::from_config(&config);
        let connection_limits = ConnectionLimits::from_config(&config);
        let ready = Arc::new(AtomicUsize::new(0));
        // After the lock, before recovery: /health answers (and /ready says not yet) while a
        // long WAL is replayed, so that a liveness probe does not kill a recovering broker. A
        // port that cannot be bound still ends the start before the Kafka listener exists, so
        // no client is ever accepted by a process that then exits.
        let admin = config
            .admin_listen
            .map(|addr| {
                bind_with_retry(addr, "admin", config.bind_retry, || {
                    AdminServer::start(addr, metrics.clone(), ready.clone(), shard_count)
                })
                .map_err(|source| StartError::Admin { addr, source })
            })
            .transpose()?;

        let (change_senders, change_receivers): (Vec<_>, Vec<_>) =
            (0..shard_count).map(|_| mpsc::channel::<()>(0)).unzip();
        let (controller, handle) = match metadata {
            Metadata::Local(store) => Controller::start(store, change_senders),
            Metadata::Quorum(runtime, node) => {
                Controller::start_quorum(runtime, node, change_senders)
            }
        }
        .map_err(|e| StartError::Shard {
            shard: 0,
            reason: format!("controller thread: {e}"),
        })?;
        metrics.set_controller(handle.clone());

        // Reserve each listener's port (port 0 picks one) so every shard binds the same
        // address. With SO_REUSEPORT a dying broker's listener of the same user does not make
        // it busy: the lock is what keeps two brokers off one port.
        let mut reservations = Vec::with_capacity(config.listeners.len());
        let mut bound = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let addr = listener.listen;
            let reservation =
                bind_with_retry(addr, "Kafka", config.bind_retry, || reserve_port(addr))
                    .map_err(|source| StartError::Listen { addr, source })?;
            let local = reservation
                .local_addr()
                .map_err(|source| StartError::Listen { addr, source })?
                .as_socket()
                .unwrap_or(addr);
            reservations.push(reservation);
            bound.push(BoundListener {
                config: listener.clone(),
                local,
                advertised: advertised_address(listener, local),
            });
        }
        let bound = Arc::new(bound);
        let local_addr = bound[0].local;
        if let Some(settings) = &config.quorum {
            let advertised = &bound[0].advertised;
            // Before any shard serves: the broker takes its share of the partitions.
            let register = MetadataCommand::RegisterBroker {
                node_id: config.node_id,
                endpoint: format!("{}:{}", advertised.0, advertised.1),
                wal: Some(wal_location(&config, shard_count)?),
            };
            if let Err(refused) = futures::executor::block_on(handle.submit(register)) {
                // Out of the quorum again, so that its leader stops sending this node the log.
                if let Err(error) = futures::executor::block_on(handle.leave_quorum()) {
                    tracing::info!(%error, "this refused broker is still an observer of the quorum");
                }
                return Err(match refused {
                    ControllerError::Metadata(e) => StartError::Metadata(e),
                    ControllerError::Stopped => {
                        StartError::Config("the controller stopped while registering".to_string())
                    }
                });
            }
            let traffic = {
                let metrics = metrics.clone();
                Arc::new(move || metrics.partition_traffic())
            };
            handle.send_heartbeats(config.node_id, settings.broker_heartbeat_interval, traffic);
        }

        let (mut senders, mut receivers) = mesh(shard_count);
        let io_memory = io_memory_bytes(shard_count);
        // One shard per physical core first, CPU 0's NUMA node first (sluice_tuning::cpu_layout).
        let cpus = sluice_tuning::cpu_layout::shard_cpus_of_this_machine();
        let drained = Arc::new(ShardBarrier::default());
        let recovered = Arc::new(ShardBarrier::default());
        let listening = Arc::new(ShardBarrier::default());
        let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(), (usize, String)>>();
        let mut stops = Vec::with_capacity(shard_count);
        let mut executors = Vec::with_capacity(shard_count);
        for (id, changes) in change_receivers.into_iter().enumerate() {
            let (stop_tx, stop_rx) = oneshot::channel();
            stops.push(stop_tx);
            let plan = ShardPlan {
                id,
                config: config.clone(),
                objects: objects.clone(),
                controller: handle.clone(),
                listeners: bound.clone(),
                senders: std::mem::take(&mut senders[id]),
                receivers: std::mem::take(&mut receivers[id]),
                changes,
                stop: stop_rx.shared(),
                started: started_tx.clone(),
                drained: drained.clone(),
                ready: ready.clone(),
                recovered: recovered.clone(),
                listening: listening.clone(),
                metrics: metrics.shard(id),
                group_limits: group_limits.clone(),
                connection_limits: connection_limits.clone(),
            };
            let executor = LocalExecutorBuilder::new(Placement::Fixed(cpus[id % cpus.len()]))
                .name(&format!("sluice-shard-{id}"))
                .io_memory(io_memory)
                .spawn(move || run_shard(plan))
                .map_err(|e| StartError::Shard {
                    shard: id,
                    reason: format!("executor: {e}"),
                })?;
            executors.push(executor);
        }
        drop(started_tx);
        drop(handle);
        let mut broker = Broker {
            local_addr,
            listener_addrs: bound.iter().map(|l| l.local).collect(),
            stops,
            executors,
            controller: Some(controller),
            admin,
            lock: Some(lock),
        };
        for _ in 0..shard_count {
            match started_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err((shard, reason))) => {
                    broker.stop();
                    return Err(StartError::Shard { shard, reason });
                }
                Err(_) => {
                    broker.stop();
                    return Err(StartError::Shard {
                        shard: 0,
                        reason: "a shard thread ended during start-up".into(),
                    });
                }
            }
        }
        drop(reservations);
        Ok(broker)
    }

    /// The address the broker listens on (with the port chosen when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of each listener, in the order of `BrokerConfig::listeners`.
    pub fn listener_addrs(&self) -> &[SocketAddr] {
        &self.listener_addrs
    }

    /// The admin HTTP server's address (with the chosen port), if it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// Stops accepting, answers the requests in flight, syncs the WALs and waits for the end.
    pub fn stop(&mut self) {
        if let Some(admin) = &self.admin {
            admin.set_stopping();
        }
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for executor in self.executors.drain(..) {
            if let Err(error) = executor.join() {
                tracing::error!(%error, "shard ended with an error");
            }
        }
        if let Some(controller) = self.controller.take() {
            controller.join();
        }
        if let Some(mut admin) = self.admin.take() {
            admin.stop();
        }
        // Last: the WALs are closed and the metadata log is synced.
        self.lock = None;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What one shard's thread needs to run.
struct ShardPlan {
    id: usize,
    config: Arc<BrokerConfig>,
    objects: ObjectStore,
    controller: ControllerHandle,
    listeners: Arc<Vec<BoundListener>>,
    senders: Vec<Option<SharedSender<ShardRequest>>>,
    receivers: Vec<SharedReceiver<ShardRequest>>,
    changes: mpsc::Receiver<()>,
    stop: StopSignal,
    started: std::sync::mpsc::Sender<Result<(), (usize, String)>>,
    drained: Arc<ShardBarrier>,
    ready: Arc<AtomicUsize>,
    recovered: Arc<ShardBarrier>,
    listening: Arc<ShardBarrier>,
    metrics: Arc<ShardMetrics>,
    group_limits: GroupLimits,
    connection_limits: Arc<ConnectionLimits>,
}

async fn run_shard(plan: ShardPlan) {
    let ShardPlan {
        id,
        config,
        objects,
        controller,
        listeners,
        senders,
        receivers,
        changes,
        stop,
        started,
        drained,
        ready,
        recovered,
        listening,
        metrics,
        group_limits,
        connection_limits,
    } = plan;
    let shard_count = senders.len();
    // Both ends of a shared channel must connect before either completes, so every shard
    // connects all its ends at once.
    let (peers, receivers) = futures::join!(
        futures::future::join_all(senders.into_iter().map(|sender| async move {
            match sender {
                Some(sender) => Some(sender.connect().await),
                None => None,
            }
        })),
        futures::future::join_all(receivers.into_iter().map(|r| r.connect()))
    );
    let built = ShardBuilder {
        id,
        config: config.clone(),
        controller,
        objects,
        metrics,
        peers,
        group_limits,
    }
    .build()
    .await;
    let BuiltShard {
        shard,
        loopback,
        group_entries,
        budget,
    } = match built {
        Ok(built) => built,
        Err(reason) => {
            let _ = started.send(Err((id, reason)));
            return;
        }
    };
    let wal = shard.storage.wal.clone();
    let memory = Rc::new(Semaphore::new(budget.request_bytes));
    let connections = Gate::new();
    let contexts = match listener_contexts(&config, &listeners) {
        Ok(contexts) => Rc::new(contexts),
        Err(reason) => {
            let _ = started.send(Err((id, reason)));
            return;
        }
    };
    let adopt: Rc<dyn Fn(router::Adopted)> = {
        let (shard, memory, stop, connections, contexts) = (
            shard.clone(),
            memory.clone(),
            stop.clone(),
            connections.clone(),
            contexts.clone(),
        );
        Rc::new(move |adopted| adopt(&shard, adopted, &contexts, &memory, &stop, &connections))
    };
    // One router per peer shard and one for the loopback; the tasks they start per request
    // hold `task_permits`.
    for receiver in receivers {
        glommio::spawn_local(router::serve(shard.clone(), receiver, adopt.clone())).detach();
    }
    {
        let (shard, adopt) = (shard.clone(), adopt.clone());
        glommio::spawn_local(async move { router::serve(shard, loopback.stream(), adopt).await })
            .detach();
    }
    spawn_image_changes(&shard, changes).detach();
    let uploads = spawn_uploads(&shard.storage, stop.clone());
    let pool_shortages =
        glommio::spawn_local(evict_on_pool_shortage(shard.storage.clone(), stop.clone()));
    let retention = glommio::spawn_local(crate::storage::retention::run_retention(
        shard.storage.clone(),
        config.retention_check_interval,
        stop.clone(),
    ));
    let maintenance = (id == 0).then(|| {
        let (storage, stop) = (shard.storage.clone(), stop.clone());
        let (step_bytes, grace) = (budget.compaction_step_bytes, config.object_delete_delay);
        let interval = config.maintenance_interval;
        glommio::spawn_local(async move {
            crate::tier::maintenance::run_maintenance(
                storage.tier.store(),
                &storage.controller,
                step_bytes,
                grace,
                interval,
                stop,
            )
            .await
        })
    });
    restore_groups(&shard, group_entries).await;
    crate::txn::serve::restore(&shard).await;
    // Every shard must hold its groups and transactions before any shard answers a client.
    recovered.arrive();
    futures::select_biased! {
        // Another shard failed to start and the broker is being stopped.
        _ = stop.clone().fuse() => return,
        _ = recovered.reached(shard_count).fuse() => {}
    }
    crate::txn::serve::start(&shard).detach();
    {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(crate::group::SWEEP_INTERVAL).await;
                let settings = crate::group::GroupSettings::from_image(&shard.image());
                for group in shard.groups.sweep(settings) {
                    let entry = crate::group::log::GroupLogEntry::GroupDelete { group };
                    if let Err(code) = shard.groups.persist(&[entry]).await {
                        tracing::warn!(?code, "expired group offsets not persisted");
                    }
                }
            }
        })
        .detach();
    }

    let mut sockets = Vec::with_capacity(listeners.len());
    for listener in listeners.iter() {
        match TcpListener::bind(listener.local) {
            Ok(socket) => sockets.push(socket),
            Err(e) => {
                let _ = started.send(Err((id, format!("listen on {}: {e}", listener.local))));
                return;
            }
        }
    }
    ready.fetch_add(1, Ordering::SeqCst);
    let _ = started.send(Ok(()));
    // Accept only once every shard listens: a shard that fails to bind stops the start, and
    // no other shard may have answered a client (acknowledged a record) by then. The kernel
    // queues connections meanwhile. On a failed start, stop is signalled and the loop below
    // ends at once.
    listening.arrive();
    futures::select_biased! {
        _ = stop.clone().fuse() => {}
        _ = listening.reached(shard_count).fuse() => {}
    }

    glommio::spawn_local(crate::quota::share_usage(shard.clone(), stop.clone())).detach();
    let sampler = glommio::spawn_local(crate::metrics::sampler::run_sampler(
        shard.clone(),
        memory.clone(),
        budget.request_bytes,
        stop.clone(),
    ));
    let acceptors = sockets.into_iter().enumerate().map(|(index, socket)| {
        accept_connections(
            &shard,
            socket,
            index,
            &contexts,
            &connection_limits,
            &memory,
            &stop,
            &connections,
        )
    });
    futures::future::join_all(acceptors).await;
    // The uploads end with the shard: a produce waiting for WAL space would never get it.
    shard.storage.wal.set_stopping();
    let _ = connections.close().await;
    // Other shards may still be finishing requests that need this shard's partitions: keep
    // serving the mesh until every shard that started has drained its connections.
    drained.arrive();
    drained.reached(ready.load(Ordering::SeqCst)).await;
    tracing::info!(
        shard = id,
        batches_appended = shard.metrics.produce_batches.get(),
        reads_served = shard.metrics.fetch_reads.get(),
        connections = shard.metrics.connections_accepted.get(),
        partitions = shard.storage.partition_count(),
        "shard stopped"
    );
    // An upload in flight (the store may be down) is left to the next start: its records are
    // still in the WAL.
    if let Some(maintenance) = maintenance {
        maintenance.cancel().await;
    }
    uploads.cancel().await;
    pool_shortages.cancel().await;
    retention.cancel().await;
    sampler.cancel().await;
    drop(adopt);
    drop(shard);
    match Rc::try_unwrap(wal) {
        Ok(wal) => {
            if let Err(error) = wal.close().await {
                tracing::error!(%error, "WAL close failed");
            }
        }
        Err(_) => tracing::debug!("WAL still shared at shutdown; its writes are already durable"),
    }
}

/// Accepts the connections of one listener until the shard stops.
#[allow(clippy::too_many_arguments)]
async fn accept_connections(
    shard: &Rc<Shard>,
    socket: TcpListener,
    index: usize,
    contexts: &[Rc<ListenerContext>],
    connection_limits: &Arc<ConnectionLimits>,
    memory: &Rc<Semaphore>,
    stop: &StopSignal,
    connections: &Gate,
) {
    let context = &contexts[index];
    loop {
        let accepted = futures::select_biased! {
            _ = stop.clone().fuse() => break,
            accepted = socket.accept().fuse() => accepted,
        };
        match accepted {
            Ok(stream) => {
                shard.metrics.connections_accepted.add(1);
                // Over a limit: dropping the stream closes it (admit counts and logs that).
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                let Ok(permit) = connection_limits.admit(peer.ip()) else {
                    continue;
                };
                let task = connection::serve(
                    shard.clone(),
                    stream,
                    context.clone(),
                    index,
                    permit,
                    memory.clone(),
                    stop.clone(),
                    Arrival::Accepted,
                );
                // One task per connection: bounded by --connections-max (`permit`), not by
                // `task_permits`. A TLS handshake runs in that task, so a slow one does not
                // hold up the accepts behind it.
                match connections.spawn(task) {
                    Ok(task) => {
                        task.detach();
                    }
                    Err(_) => break,
                }
            }
            Err(error) => {
                tracing::warn!(%error, listener = %context.name, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// This shard's view of the listeners, each TLS one with a TLS acceptor of its own (all
/// built from the same files, which `sluice start` checked).
fn listener_contexts(
    config: &BrokerConfig,
    listeners: &[BoundListener],
) -> Result<Vec<Rc<ListenerContext>>, String> {
    let acceptors = if listeners.iter().any(|l| l.config.protocol.uses_tls()) {
        Some(TlsAcceptor::for_listeners(&config.security)?)
    } else {
        None
    };
    Ok(listeners
        .iter()
        .map(|l| {
            let tls = match (&acceptors, l.config.protocol) {
                (Some((ssl, _)), SecurityProtocol::Ssl) => Some(ssl.clone()),
                (Some((_, sasl_ssl)), SecurityProtocol::SaslSsl) => Some(sasl_ssl.clone()),
                _ => None,
            };
            Rc::new(ListenerContext {
                name: l.config.name.clone(),
                protocol: l.config.protocol,
                advertised: l.advertised.clone(),
                tls,
            })
        })
        .collect())
}

/// Serves a connection another shard handed over because this shard owns its partitions.
fn adopt(
    shard: &Rc<Shard>,
    (socket, permit, listener): router::Adopted,
    listeners: &[Rc<ListenerContext>],
    memory: &Rc<Semaphore>,
    stop: &StopSignal,
    connections: &Gate,
) {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let Some(context) = listeners.get(listener) else {
        // Every shard has the same listeners: an index out of range is a bug; the socket
        // closes when dropped.
        tracing::error!(listener, "connection handed over from an unknown listener");
        return;
    };
    // SAFETY: `socket` is an open, connected TCP socket (a dup the sending shard made of its
    // stream), and ownership of the descriptor passes to the TcpStream here.
    let stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
    let task = connection::serve(
        shard.clone(),
        stream,
        context.clone(),
        listener,
        permit,
        memory.clone(),
        stop.clone(),
        Arrival::Moved,
    );
    match connections.spawn(task) {
        Ok(task) => {
            task.detach();
        }
        // The shard is stopping: dropping the stream closes the connection.
        Err(_) => tracing::debug!("connection handed over while stopping; closed"),
    }
}

/// Senders `[from][to]` and receivers `[to][..]` of a full mesh of bounded channels.
#[allow(clippy::type_complexity)]
fn mesh(
    shards: usize,
) -> (
    Vec<Vec<Option<SharedSender<ShardRequest>>>>,
    Vec<Vec<SharedReceiver<ShardRequest>>>,
) {
    let mut senders: Vec<Vec<Option<SharedSender<ShardRequest>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
    let mut receivers: Vec<Vec<SharedReceiver<ShardRequest>>> =
        (0..shards).map(|_| Vec::new()).collect();
    for (from, row) in senders.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from != to {
                let (sender, receiver) = shared_channel::new_bounded(MESH_QUEUE_DEPTH);
                *slot = Some(sender);
                receivers[to].push(receiver);
            }
        }
    }
    (senders, receivers)
}

/// Calls `bind` until it succeeds or fails with anything but "address in use", for at most
/// `retry` (a broker killed a moment ago may still hold the port); then the last error.
/// Where this node's metadata comes from.
enum Metadata {
    /// The single node's own log.
    Local(MetadataStore),
    /// This node's part of the controller quorum, with the runtime it runs on.
    Quorum(tokio::runtime::Runtime, QuorumNode),
}

impl Metadata {
    fn image(&self) -> Arc<sluice_metadata::MetadataImage> {
        match self {
            Metadata::Local(store) => store.image(),
            Metadata::Quorum(_, node) => node.image(),
        }
    }
}

/// Opens the local metadata store or, with `--controller-quorum-voters`, joins the quorum;
/// with `catch_up`, waits until this node has everything it committed (as a KRaft broker
/// catches up with the metadata log before it serves), however long the quorum takes to
/// form.
fn open_metadata(config: &BrokerConfig, catch_up: bool) -> Result<Metadata, StartError> {
    let Some(settings) = &config.quorum else {
        return Ok(Metadata::Local(MetadataStore::open(
            &config.data_dir.join("metadata"),
            config.node_id,
        )?));
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sluice-quorum")
        .enable_all()
        .build()
        .map_err(|e| StartError::Config(format!("the controller quorum's runtime: {e}")))?;
    let addr = settings.controller_listen;
    let listener = bind_with_retry(addr, "controller", config.bind_retry, || {
        std::net::TcpListener::bind(addr)
    })
    .map_err(|source| StartError::Listen { addr, source })?;
    let node_id = u64::try_from(config.node_id)
        .map_err(|_| StartError::Config("--node-id must not be negative".to_string()))?;
    let quorum_config = QuorumConfig {
        node_id,
        addr: settings
            .voters
            .get(&node_id)
            .cloned()
            .unwrap_or_else(|| addr.to_string()),
        voters: settings.voters.clone(),
        dir: config.data_dir.join("metadata-quorum"),
        cluster_id: cluster_id_of_voters(&settings.voters),
        broker_session_timeout: settings.broker_session_timeout,
    };
    let node = runtime.block_on(QuorumNode::start(quorum_config, listener))?;
    if catch_up {
        loop {
            match runtime.block_on(node.catch_up(QUORUM_WAIT_LOG_INTERVAL)) {
                Ok(image) => {
                    tracing::info!(
                        epoch = image.epoch,
                        leader = ?node.status().leader,
                        "caught up with the controller quorum"
                    );
                    break;
                }
                Err(error) => tracing::info!(%error, "waiting for the controller quorum"),
            }
        }
    }
    Ok(Metadata::Quorum(runtime, node))
}

/// A node with only the controller role (`--process-roles controller`): its part of the
/// quorum, no Kafka listener, no shards.
pub struct ControllerOnly {
    runtime: tokio::runtime::Runtime,
    node: QuorumNode,
    // Held until the quorum node has stopped.
    _lock: DataDirLock,
}

impl ControllerOnly {
    /// Joins the quorum that `config.quorum` names; returns at once (the quorum forms, and
    /// this controller catches up, as the other voters start).
    pub fn start(config: &BrokerConfig) -> Result<ControllerOnly, StartError> {
        let lock = DataDirLock::acquire(&config.data_dir, None, config.lock_wait)?;
        match open_metadata(config, false)? {
            Metadata::Quorum(runtime, node) => Ok(ControllerOnly {
                runtime,
                node,
                _lock: lock,
            }),
            Metadata::Local(_) => Err(StartError::Config(
                "a controller needs --controller-quorum-voters".to_string(),
            )),
        }
    }

    /// Leaves the quorum's RPCs unanswered and stops Raft.
    pub fn stop(self) {
        self.runtime.block_on(self.node.shutdown());
        self.runtime.shutdown_background();
    }
}

/// How often a node waiting for the controller quorum says so.
const QUORUM_WAIT_LOG_INTERVAL: Duration = Duration::from_secs(10);

fn bind_with_retry<T>(
    addr: SocketAddr,
    name: &str,
    retry: Duration,
    mut bind: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let bound = retry_while_busy(
        retry,
        || format!("{name} address {addr} is in use (by a broker still exiting?)"),
        || match bind() {
            Ok(bound) => Ok(Some(bound)),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Ok(None),
            Err(error) => Err(error),
        },
    )?;
    match bound {
        Some(bound) => Ok(bound),
        None => bind().map_err(|error| {
            std::io::Error::new(
                error.kind(),
                format!(
                    "{error}, still after {} ms of retries (--bind-retry-ms)",
                    retry.as_millis()
                ),
            )
        }),
    }
}

/// Binds (without listening) a socket on the listen address with SO_REUSEPORT, so the port is
/// known and held while the shards bind it too.
fn reserve_port(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Where this broker's shard WALs are, as the quorum keeps it for a survivor to take them
/// over: absolute paths, since the taker runs elsewhere.
fn wal_location(config: &BrokerConfig, shard_count: usize) -> Result<WalLocation, StartError> {
    let paths = (0..shard_count)
        .map(|shard| {
            let path = config.wal_path_for(shard);
            std::path::absolute(&path)
                .map(|p| p.display().to_string())
                .map_err(|e| StartError::Config(format!("WAL path {}: {e}", path.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WalLocation {
        paths,
        capacity_bytes: config.wal_bytes_per_shard,
    })
}

/// Opens the object store `config` names, its I/O pacer bounded by `--object-io-pause-max-ms`.
pub(crate) fn open_object_store(config: &BrokerConfig) -> Result<ObjectStore, StartError> {
    let objects = ObjectStore::open(&config.object_store_config())
        .map_err(|e| StartError::ObjectStore(e.to_string()))?;
    if let Some(pacer) = objects.io_pacer() {
        pacer.set_pause_max(config.object_io_pause_max);
    }
    Ok(objects)
}

/// Applies the log levels changed at run time before the last stop (`log_levels.rs`).
fn restore_log_levels(levels: &dyn LogLevels, data_dir: &Path) -> Result<(), StartError> {
    let refused =
        crate::log_levels::restore(levels, data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.join(crate::log_levels::LOG_LEVELS_FILE),
            source,
        })?;
    for why in refused {
        tracing::warn!(%why, "a log level kept from the last run was not applied");
    }
    Ok(())
}

/// A listener with the address it was bound to.
struct BoundListener {
    config: ListenerConfig,
    /// With the port chosen when port 0 was asked for.
    local: SocketAddr,
    advertised: (String, i32),
}

fn advertised_address(listener: &ListenerConfig, local: SocketAddr) -> (String, i32) {
    if let Some(advertised) = &listener.advertised
        && let Some((host, port)) = advertised.rsplit_once(':')
        && let Ok(port) = port.parse::<i32>()
    {
        return (host.trim_matches(['[', ']']).to_string(), port);
    }
    let host = if local.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        local.ip().to_string()
    };
    (host, i32::from(local.port()))
}

/// Refuses to start with fewer shards than WAL files hold data for: their records would not
/// be replayed.
fn check_wal_layout(config: &BrokerConfig, shards: usize) -> Result<(), StartError> {
    let base = config
        .wal_path
        .clone()
        .unwrap_or_else(|| config.data_dir.join("wal"));
    if is_block_device(&base) {
        if shards != 1 {
            return Err(StartError::Config(format!(
                "WAL on block device {} supports one shard; start with --shards 1",
                base.display()
            )));
        }
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(index) = name
            .strip_prefix("shard-")
            .and_then(|s| {
                s.strip_suffix(".wal")
                    .or_else(|| s.strip_suffix(".segments"))
            })
            .and_then(|s| s.parse::<usize>().ok())
            && index >= shards
        {
            return Err(StartError::Config(format!(
                "{} holds the WAL of shard {index}, but only {shards} shards were asked for; \
                 start with --shards {} or more",
                base.display(),
                index + 1
            )));
        }
    }
    Ok(())
}

/// While a frame or batch waits for the memory pool, evicts uploaded batches from the log
/// cache down to half its budget (the upload task evicts only down to the budget, and only
/// after an upload), at most once per [`POOL_SHORTAGE_CHECK_INTERVAL`]. A wait that goes on
/// (another shortage within [`POOL_SHORTAGE_PERSISTS`]) halves that target again, down to
/// nothing uploaded left in the cache: the pool may be short of one large block with most of
/// it free, in pieces that cached batches keep apart, and no mix of sizes may stall a shard.
///
/// Woken by the wait rather than a 10 ms timer: every timer wakes an idle shard, and a wake-up
/// costs about 100 µs of CPU on a VM (2 × 130 wakes a second, idle, before).
async fn evict_on_pool_shortage(storage: Rc<PartitionStore>, stop: StopSignal) {
    let mut target_bytes = 0;
    let mut last_shortage: Option<Instant> = None;
    loop {
        futures::select_biased! {
            _ = stop.clone().fuse() => return,
            _ = storage.memory_pool.shortage().fuse() => {}
        }
        let now = Instant::now();
        target_bytes = match last_shortage {
            Some(at) if now.duration_since(at) <= POOL_SHORTAGE_PERSISTS => target_bytes / 2,
            _ => storage.tier.log_cache_budget_bytes() / 2,
        };
        last_shortage = Some(now);
        storage.evict_log_cache(target_bytes);
        futures::select_biased! {
            _ = stop.clone().fuse() => return,
            _ = glommio::timer::sleep(POOL_SHORTAGE_CHECK_INTERVAL).fuse() => {}
        }
    }
}

/// Turns glibc's dynamic mmap threshold off ([`MALLOC_MMAP_THRESHOLD_BYTES`]).
fn fix_malloc_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets a malloc parameter; it is thread-safe. Runs on every start.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES) } != 1 {
            tracing::warn!("glibc refused M_MMAP_THRESHOLD; the heap may fragment");
        }
    }
}

/// glommio locks 3 × io_memory per executor; fit that inside RLIMIT_MEMLOCK when the process
/// cannot lock more (not root), and say so.
pub fn io_memory_bytes(shards: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct passed; exercised on every start.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    let wanted = (3 * shards * IO_MEMORY_BYTES_DEFAULT) as u64;
    if !got || limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= wanted {
        return IO_MEMORY_BYTES_DEFAULT;
    }
    if limit.rlim_max == libc::RLIM_INFINITY || limit.rlim_max >= wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            return IO_MEMORY_BYTES_DEFAULT;
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return IO_MEMORY_BYTES_DEFAULT; // root has CAP_IPC_LOCK
    }
    let fitted = ((limit.rlim_cur as usize) / (3 * shards)).max(IO_MEMORY_BYTES_MIN);
    tracing::warn!(
        memlock_limit_bytes = limit.rlim_cur,
        io_memory_bytes = fitted,
        "RLIMIT_MEMLOCK is below {wanted} bytes (3 x shards x {IO_MEMORY_BYTES_DEFAULT}); \
         using less I/O memory per shard. Raise it with `ulimit -l` or grant CAP_IPC_LOCK"
    );
    fitted
}
