//! InitProducerId: a fresh producer id for an idempotent producer; for a transactional one,
//! the transactional id's coordinator bumps the epoch and fences earlier producers.

use std::rc::Rc;

use sluice_net::ErrorCode;
use sluice_net::messages::init_producer_id_request::InitProducerIdRequest;
use sluice_net::messages::init_producer_id_response::InitProducerIdResponse;

use crate::shard::Shard;
use crate::txn::call::{TxnCall, TxnReply};

/// Answers from the transaction coordinator (transactional id) or hands out a new id at epoch 0.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let result = if request.transactional_id.is_some() {
        initialize_transactional(shard, version, request).await
    } else {
        shard.producer_ids.next().await.map(|id| (id, 0))
    };
    match result {
        Ok((producer_id, producer_epoch)) => InitProducerIdResponse {
            error_code: 0,
            producer_id,
            producer_epoch,
            ..Default::default()
        },
        Err(code) => InitProducerIdResponse {
            error_code: code.code(),
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        },
    }
}

async fn initialize_transactional(
    shard: &Rc<Shard>,
    version: i16,
    request: InitProducerIdRequest,
) -> Result<(i64, i16), ErrorCode> {
    let transactional_id = request.transactional_id.unwrap_or_default();
    super::transactions::check_transactional_id(&transactional_id)?;
    // v3+ (KIP-360): a producer re-initializing names its current id and epoch, both or none.
    let expected = match (request.producer_id, request.producer_epoch) {
        _ if version < 3 => None,
        (-1, -1) => None,
        (producer_id, epoch) if producer_id >= 0 && epoch >= 0 => Some((producer_id, epoch)),
        _ => return Err(ErrorCode::InvalidRequest),
    };
    let owner = shard.coordinator_shard(&transactional_id);
    let call = TxnCall::InitProducerId {
        transactional_id,
        timeout_ms: request.transaction_timeout_ms,
        expected,
    };
    match crate::txn::serve::ask(shard, owner, call).await {
        Some(TxnReply::ProducerId(result)) => result,
        _ => Err(ErrorCode::CoordinatorNotAvailable),
    }
}
