//! One shard run on the caller's glommio executor and fed request frames instead of a socket,
//! so the produce pipeline (parse → order → persist → response) can be measured without the
//! network (`benches/benches/pipeline.rs`).

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::channel::{mpsc, oneshot};
use sluice_metadata::MetadataStore;

use crate::affinity::ConnectionAffinity;
use crate::api::PendingResponse;
use crate::builder::{
    BuiltShard, ShardBuilder, restore_groups, spawn_image_changes, spawn_uploads,
};
use crate::config::BrokerConfig;
use crate::connection;
use crate::controller::Controller;
use crate::group::limits::GroupLimits;
use crate::metrics::BrokerMetrics;
use crate::router;
use crate::runtime::{StartError, open_object_store};
use crate::security::{ANONYMOUS, ClientContext, ListenerContext, SecurityProtocol};
use crate::shard::Shard;

/// The client host the handlers see for frames submitted in process.
const CLIENT_HOST: &str = "in-process";

/// The address Metadata answers advertise: nothing listens, so port 0.
const ADVERTISED_HOST: &str = "localhost";

/// A single-shard broker without sockets: its metadata controller, WAL, object store and
/// uploader are real; requests go through the connection's own parse and order stages and
/// the shard's router, as on a socket.
pub struct InProcessShard {
    shard: Rc<Shard>,
    controller: Controller,
    stop: oneshot::Sender<()>,
    uploads: glommio::Task<()>,
    image_changes: glommio::Task<()>,
    requests: glommio::Task<()>,
    txn_timers: glommio::Task<()>,
    affinity: ConnectionAffinity,
    client: ClientContext,
}

impl InProcessShard {
    /// Opens the metadata, object store and WAL under `config.data_dir` and builds the shard
    /// as the runtime does (recovering what the WAL holds), on the current executor.
    pub async fn start(config: BrokerConfig) -> Result<InProcessShard, StartError> {
        let config = Arc::new(config);
        let metadata_dir = config.data_dir.join("metadata");
        std::fs::create_dir_all(&metadata_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let store = MetadataStore::open(&metadata_dir, config.node_id)?;
        let objects = open_object_store(&config)?;
        let shard_error = |reason: String| StartError::Shard { shard: 0, reason };
        let (change_sender, changes) = mpsc::channel::<()>(0);
        let (controller, handle) = Controller::start(store, vec![change_sender])
            .map_err(|e| shard_error(format!("controller thread: {e}")))?;
        let metrics = BrokerMetrics::new(1, objects.clone()).shard(0);
        let built = ShardBuilder {
            id: 0,
            config: config.clone(),
            controller: handle,
            objects,
            metrics,
            peers: vec![None],
            group_limits: GroupLimits::from_config(&config),
        }
        .build()
        .await;
        let BuiltShard {
            shard,
            loopback,
            group_entries,
            ..
        } = match built {
            Ok(built) => built,
            Err(reason) => {
                controller.join();
                return Err(shard_error(reason));
            }
        };
        // No other shard can hand a connection over; one arriving anyway is closed on drop.
        let requests = {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                router::serve(shard, loopback.stream(), Rc::new(drop)).await
            })
        };
        restore_groups(&shard, group_entries).await;
        crate::txn::serve::restore(&shard).await;
        let txn_timers = crate::txn::serve::start(&shard);
        let (stop, stopped) = oneshot::channel();
        let uploads = spawn_uploads(&shard.storage, stopped.shared());
        let image_changes = spawn_image_changes(&shard, changes);
        Ok(InProcessShard {
            shard,
            controller,
            stop,
            uploads,
            image_changes,
            requests,
            txn_timers,
            affinity: ConnectionAffinity::default(),
            client: ClientContext {
                host: CLIENT_HOST.into(),
                listener: Rc::new(ListenerContext {
                    name: "PLAINTEXT".to_string(),
                    protocol: SecurityProtocol::Plaintext,
                    advertised: (ADVERTISED_HOST.to_string(), 0),
                    tls: None,
                }),
                principal: ANONYMOUS.into(),
                quotas: Default::default(),
            },
        })
    }

    /// Parses `frame` (a request without its 4-byte length prefix) and, for a produce, orders
    /// its batches; the returned future persists and yields the encoded response frame. None:
    /// a connection would be closed (a request that cannot be parsed).
    pub async fn submit(&self, frame: Bytes) -> Option<PendingResponse> {
        connection::parse_and_order(&self.shard, frame, &self.client, &self.affinity).await
    }

    /// Stops the uploader (records not uploaded stay in the WAL), the controller thread, and
    /// closes the WAL.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.uploads.await;
        self.image_changes.cancel().await;
        self.requests.cancel().await;
        self.txn_timers.cancel().await;
        self.controller.join();
        let wal = self.shard.storage.wal.clone();
        drop(self.shard);
        match Rc::try_unwrap(wal) {
            Ok(wal) => {
                if let Err(error) = wal.close().await {
                    tracing::error!(%error, "WAL close failed");
                }
            }
            Err(_) => tracing::debug!("WAL still shared at stop; its writes are already durable"),
        }
    }
}

/// Encodes `request` as a frame for [`InProcessShard::submit`]: a request header and body,
/// without the 4-byte length prefix a socket would carry.
pub fn request_frame(
    api_key: sluice_net::ApiKey,
    version: i16,
    request: &sluice_net::Request,
) -> Result<Bytes, sluice_net::EncodeError> {
    let header = sluice_net::RequestHeader {
        request_api_key: api_key as i16,
        request_api_version: version,
        correlation_id: 1,
        client_id: Some(CLIENT_HOST.to_string()),
    };
    let mut out = bytes::BytesMut::new();
    sluice_net::encode_request(&header, request, &mut out)?;
    Ok(out.freeze().slice(4..))
}
