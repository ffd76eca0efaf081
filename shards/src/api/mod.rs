//! Request handlers, one file per Kafka API, and the dispatch from a decoded request to them.

pub mod acls;
pub mod admin_topics;
pub mod api_versions;
pub mod authorize;
pub mod client_quotas;
pub mod cluster;
pub mod configs;
pub mod fetch;
pub mod fetch_session;
pub mod groups;
pub mod implemented;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod reassignments;
pub mod response;
pub mod scram_credentials;
pub mod transactions;
pub mod txn_markers;
pub mod txn_tooling;

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::channel::oneshot;
use sluice_net::{Request, RequestHeader, Response};

use crate::messaging::ShardRequest;
use crate::quota;
use crate::security::{Access, ClientContext};
use crate::shard::Shard;
pub use implemented::IMPLEMENTED_APIS;
pub use response::{PendingResponse, ResponseFrame};

/// Routes one request to its handler. A produce's batches are queued for their owner shards
/// before this returns, so batches of one connection reach each owner in request order; the
/// rest runs in the returned future, overlapped with the next requests. `request_bytes`: the
/// request frame's size, which a produce charges to its client's quota (`quota`).
pub async fn dispatch(
    shard: &Rc<Shard>,
    header: RequestHeader,
    request: Request,
    client: &ClientContext,
    request_bytes: usize,
) -> PendingResponse {
    let version = header.request_api_version;
    let correlation_id = header.correlation_id;
    let acks_zero = matches!(&request, Request::Produce(r) if r.acks == 0);
    tracing::trace!(api = header.request_api_key, version, correlation_id, client = ?header.client_id, principal = %client.principal, listener = %client.listener.name, "request");
    // None, at the cost of one look at an empty map, unless a client quota is set.
    let applied = shard.controller.with_image(|image| {
        client.quotas.applied(
            image.client_quotas(),
            &client.principal,
            header.client_id.as_deref().unwrap_or_default(),
        )
    });
    // Kafka bounds a quota'd client's fetch by what its quota lets through at once
    // (`getMaxValueInQuotaWindow`): one fetch never owes more than a second of throttle here.
    let mut request = request;
    if let (Some(applied), Request::Fetch(fetch)) = (&applied, &mut request)
        && let Some(bytes_max) = applied.fetch_bytes_max()
    {
        fetch.max_bytes = fetch.max_bytes.min(bytes_max);
    }
    let charged = applied.map(|applied| {
        let produce = matches!(request, Request::Produce(_));
        (applied, client.quotas.clone(), shard.clone(), produce)
    });
    let shard = shard.clone();
    let pool = shard.memory_pool.clone();
    let authorizer = &shard.config.security.authorizer;
    let (request, amend) = if authorizer.enabled {
        let access = Access::new(
            authorizer.clone(),
            shard.image(),
            client.principal.clone(),
            client.host.clone(),
        );
        match authorize::screen(request, version, &access) {
            authorize::Screened::Handle(request, amend) => (request, amend),
            authorize::Screened::Refuse(response) => {
                tracing::debug!(api = header.request_api_key, principal = %client.principal, "request refused by the ACLs");
                let frame = response::reply(&pool, correlation_id, version, &response, acks_zero);
                return futures::future::ready(frame).boxed_local();
            }
        }
    } else {
        (request, None)
    };
    let response: futures::future::LocalBoxFuture<'static, Option<Response>> = match request {
        Request::Produce(r) => produce::order(&shard, r).await,
        Request::Fetch(r) => {
            async move { Some(Response::Fetch(fetch::handle(&shard, version, r).await)) }
                .boxed_local()
        }
        Request::ListOffsets(r) => async move {
            Some(Response::ListOffsets(
                list_offsets::handle(&shard, version, r).await,
            ))
        }
        .boxed_local(),
        Request::OffsetForLeaderEpoch(r) => async move {
            Some(Response::OffsetForLeaderEpoch(
                offset_for_leader_epoch::handle(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::Metadata(r) => {
            let listener = client.listener.clone();
            async move {
                Some(Response::Metadata(
                    metadata::handle(&shard, version, r, &listener.advertised).await,
                ))
            }
            .boxed_local()
        }
        Request::ApiVersions(_) => {
            futures::future::ready(Some(Response::ApiVersions(api_versions::handle())))
                .boxed_local()
        }
        Request::CreateTopics(r) => async move {
            Some(Response::CreateTopics(
                admin_topics::create_topics(&shard, version, r).await,
            ))
        }
        .boxed_local(),
        Request::DeleteTopics(r) => async move {
            Some(Response::DeleteTopics(
                admin_topics::delete_topics(&shard, version, r).await,
            ))
        }
        .boxed_local(),
        Request::CreatePartitions(r) => async move {
            Some(Response::CreatePartitions(
                admin_topics::create_partitions(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::DeleteRecords(r) => async move {
            Some(Response::DeleteRecords(
                admin_topics::delete_records(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::DescribeConfigs(r) => async move {
            Some(Response::DescribeConfigs(configs::describe(
                &shard, version, r,
            )))
        }
        .boxed_local(),
        Request::AlterConfigs(r) => {
            async move { Some(Response::AlterConfigs(configs::alter(&shard, r).await)) }
                .boxed_local()
        }
        Request::IncrementalAlterConfigs(r) => async move {
            Some(Response::IncrementalAlterConfigs(
                configs::incremental_alter(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::DescribeCluster(r) => futures::future::ready(Some(Response::DescribeCluster(
            cluster::describe_cluster(&shard, r, &client.listener.advertised),
        )))
        .boxed_local(),
        Request::DescribeQuorum(r) => async move {
            Some(Response::DescribeQuorum(
                cluster::describe_quorum(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::AlterPartitionReassignments(r) => async move {
            Some(Response::AlterPartitionReassignments(
                reassignments::alter_partition_reassignments(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::ListPartitionReassignments(r) => {
            futures::future::ready(Some(Response::ListPartitionReassignments(
                reassignments::list_partition_reassignments(&shard, r),
            )))
            .boxed_local()
        }
        Request::DescribeUserScramCredentials(r) => futures::future::ready(Some(
            Response::DescribeUserScramCredentials(scram_credentials::describe(&shard, r)),
        ))
        .boxed_local(),
        Request::AlterUserScramCredentials(r) => async move {
            Some(Response::AlterUserScramCredentials(
                scram_credentials::alter(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::DescribeAcls(r) => {
            futures::future::ready(Some(Response::DescribeAcls(acls::describe(&shard, r))))
                .boxed_local()
        }
        Request::CreateAcls(r) => {
            async move { Some(Response::CreateAcls(acls::create(&shard, r).await)) }.boxed_local()
        }
        Request::DeleteAcls(r) => {
            async move { Some(Response::DeleteAcls(acls::delete(&shard, r).await)) }.boxed_local()
        }
        Request::DescribeClientQuotas(r) => futures::future::ready(Some(
            Response::DescribeClientQuotas(client_quotas::describe(&shard, r)),
        ))
        .boxed_local(),
        Request::AlterClientQuotas(r) => async move {
            Some(Response::AlterClientQuotas(
                client_quotas::alter(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::ElectLeaders(r) => futures::future::ready(Some(Response::ElectLeaders(
            reassignments::elect_leaders(&shard, version, r),
        )))
        .boxed_local(),
        Request::DescribeLogDirs(r) => async move {
            Some(Response::DescribeLogDirs(
                cluster::describe_log_dirs(&shard, version, r).await,
            ))
        }
        .boxed_local(),
        Request::InitProducerId(r) => async move {
            Some(Response::InitProducerId(
                init_producer_id::handle(&shard, version, r).await,
            ))
        }
        .boxed_local(),
        Request::AddPartitionsToTxn(r) => async move {
            Some(Response::AddPartitionsToTxn(
                transactions::add_partitions_to_txn(&shard, version, r).await,
            ))
        }
        .boxed_local(),
        Request::AddOffsetsToTxn(r) => async move {
            Some(Response::AddOffsetsToTxn(
                transactions::add_offsets_to_txn(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::TxnOffsetCommit(r) => async move {
            Some(Response::TxnOffsetCommit(
                transactions::txn_offset_commit(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::EndTxn(r) => {
            async move { Some(Response::EndTxn(transactions::end_txn(&shard, r).await)) }
                .boxed_local()
        }
        Request::WriteTxnMarkers(r) => async move {
            Some(Response::WriteTxnMarkers(
                txn_markers::handle(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::DescribeProducers(r) => async move {
            Some(Response::DescribeProducers(
                txn_tooling::describe_producers(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::DescribeTransactions(r) => async move {
            Some(Response::DescribeTransactions(
                txn_tooling::describe_transactions(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::ListTransactions(r) => async move {
            Some(Response::ListTransactions(
                txn_tooling::list_transactions(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::FindCoordinator(r) => futures::future::ready(Some(Response::FindCoordinator(
            groups::find_coordinator(&shard, version, r, &client.listener.advertised),
        )))
        .boxed_local(),
        Request::JoinGroup(r) => {
            let client_id = header.client_id.clone().unwrap_or_default();
            let client_host = client.host.to_string();
            async move {
                Some(Response::JoinGroup(
                    groups::join_group(&shard, version, r, client_id, client_host).await,
                ))
            }
            .boxed_local()
        }
        Request::SyncGroup(r) => async move {
            Some(Response::SyncGroup(
                groups::sync_group(&shard, version, r).await,
            ))
        }
        .boxed_local(),
        Request::Heartbeat(r) => {
            async move { Some(Response::Heartbeat(groups::heartbeat(&shard, r).await)) }
                .boxed_local()
        }
        Request::LeaveGroup(r) => async move {
            Some(Response::LeaveGroup(
                groups::leave_group(&shard, version, r).await,
            ))
        }
        .boxed_local(),
        Request::OffsetCommit(r) => async move {
            Some(Response::OffsetCommit(
                groups::offset_commit(&shard, version, r).await,
            ))
        }
        .boxed_local(),
        Request::ConsumerGroupHeartbeat(r) => {
            let client_id = header.client_id.clone().unwrap_or_default();
            let client_host = client.host.to_string();
            async move {
                Some(Response::ConsumerGroupHeartbeat(
                    groups::consumer_group_heartbeat(&shard, version, r, client_id, client_host)
                        .await,
                ))
            }
            .boxed_local()
        }
        Request::ConsumerGroupDescribe(r) => async move {
            Some(Response::ConsumerGroupDescribe(
                groups::consumer_group_describe(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::OffsetFetch(r) => async move {
            Some(Response::OffsetFetch(
                transactions::offset_fetch(&shard, version, r).await,
            ))
        }
        .boxed_local(),
        Request::ListGroups(r) => {
            async move { Some(Response::ListGroups(groups::list_groups(&shard, r).await)) }
                .boxed_local()
        }
        Request::DescribeGroups(r) => async move {
            Some(Response::DescribeGroups(
                groups::describe_groups(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::DeleteGroups(r) => async move {
            Some(Response::DeleteGroups(
                groups::delete_groups(&shard, r).await,
            ))
        }
        .boxed_local(),
        Request::OffsetDelete(r) => async move {
            Some(Response::OffsetDelete(
                groups::offset_delete(&shard, r).await,
            ))
        }
        .boxed_local(),
        other => {
            tracing::warn!(api = ?header.request_api_key, "request for an API this broker does not serve");
            drop(other);
            futures::future::ready(None).boxed_local()
        }
    };
    // What the authorizer refused or must hide is settled before anything else reads the
    // response.
    let response = match amend {
        None => response,
        Some(amend) => async move {
            let mut response = response.await?;
            amend(&mut response);
            Some(response)
        }
        .boxed_local(),
    };
    let Some((applied, connection_quotas, shard, produce)) = charged else {
        return async move {
            let response = response.await?;
            response::reply(&pool, correlation_id, version, &response, acks_zero)
        }
        .boxed_local();
    };
    async move {
        // The shard's time on this request: its polls (what it computes here, not what it
        // waits for), Kafka's request time for request_percentage.
        let mut busy = Duration::ZERO;
        let mut handling = response;
        let mut response = futures::future::poll_fn(|cx| {
            let started = Instant::now();
            let polled = handling.as_mut().poll(cx);
            busy += started.elapsed();
            polled
        })
        .await;
        let throttle_ms = applied.charge(&shard, response.as_mut(), request_bytes, produce, busy);
        connection_quotas.set_throttled(throttle_ms > 0);
        if throttle_ms > 0 {
            // A client that gets no response (acks=0) cannot throttle itself: it is muted.
            if acks_zero || quota::connection::client_throttles(response.as_ref(), version) {
                connection_quotas.mute_for(throttle_ms);
            } else {
                glommio::timer::sleep(Duration::from_millis(throttle_ms)).await;
            }
        }
        let response = response?;
        response::reply(&pool, correlation_id, version, &response, acks_zero)
    }
    .boxed_local()
}

/// Asks the owner shard of `topic`/`partition` with the request `build` makes from the
/// partition's stream id: UNKNOWN_TOPIC_OR_PARTITION when it does not exist, and the errors
/// of `check_leader_epoch` for the client's `current_leader_epoch`.
pub async fn ask_partition<T>(
    shard: &Rc<Shard>,
    image: &sluice_metadata::MetadataImage,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
    build: impl FnOnce(u64, oneshot::Sender<Result<T, sluice_net::ErrorCode>>) -> ShardRequest,
) -> Result<T, sluice_net::ErrorCode> {
    let (owner, stream_id) = shard
        .locate(image, topic, partition)
        .ok_or(sluice_net::ErrorCode::UnknownTopicOrPartition)?;
    check_leader_epoch(image, stream_id, current_leader_epoch)?;
    let answer = shard.mesh.ask(owner, |reply| build(stream_id, reply)).await;
    answer
        .await
        .unwrap_or(Err(sluice_net::ErrorCode::UnknownServerError))
}

/// The leader epoch of `topic`/`partition`, if that partition exists.
pub fn leader_epoch(
    image: &sluice_metadata::MetadataImage,
    topic: &str,
    partition: i32,
) -> Option<i32> {
    let part = image.partition(topic, u32::try_from(partition).ok()?)?;
    Some(image.leadership(part.stream_id).leader_epoch)
}

/// Kafka's check of the leader epoch a client sends (KIP-320): -1 skips it; an older epoch
/// than the partition's is FENCED_LEADER_EPOCH (the client's metadata is stale), a newer one
/// UNKNOWN_LEADER_EPOCH (this broker's is); both make the client refresh its metadata.
pub fn check_leader_epoch(
    image: &sluice_metadata::MetadataImage,
    stream_id: u64,
    current_leader_epoch: i32,
) -> Result<(), sluice_net::ErrorCode> {
    if current_leader_epoch < 0 {
        return Ok(());
    }
    let epoch = image.leadership(stream_id).leader_epoch;
    match current_leader_epoch.cmp(&epoch) {
        std::cmp::Ordering::Less => Err(sluice_net::ErrorCode::FencedLeaderEpoch),
        std::cmp::Ordering::Greater => Err(sluice_net::ErrorCode::UnknownLeaderEpoch),
        std::cmp::Ordering::Equal => Ok(()),
    }
}
