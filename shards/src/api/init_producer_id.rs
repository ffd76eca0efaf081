//! InitProducerId for idempotent producers (transactional ids arrive with issue 7).

use std::rc::Rc;

use sluice_net::ErrorCode;
use sluice_net::messages::init_producer_id_request::InitProducerIdRequest;
use sluice_net::messages::init_producer_id_response::InitProducerIdResponse;

use crate::shard::Shard;

/// Hands out a fresh producer id at epoch 0.
pub async fn handle(shard: &Rc<Shard>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    if request.transactional_id.is_some() {
        return InitProducerIdResponse {
            error_code: ErrorCode::TransactionalIdAuthorizationFailed.code(),
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        };
    }
    match shard.next_producer_id().await {
        Ok(producer_id) => InitProducerIdResponse {
            error_code: 0,
            producer_id,
            producer_epoch: 0,
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
