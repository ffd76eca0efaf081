//! Producer ids for InitProducerId, taken from the controller in blocks so that most
//! allocations are local to the shard.

use std::cell::Cell;

use sluice_metadata::{CommandOutcome, MetadataCommand};
use sluice_net::ErrorCode;

use crate::controller::ControllerHandle;
use crate::errors::controller_error_code;

/// Producer ids a shard takes from the controller at once.
const PRODUCER_ID_BLOCK: u32 = 1000;

/// The block of producer ids a shard hands out: `[next, end)`.
pub struct ProducerIds {
    controller: ControllerHandle,
    block: Cell<(i64, i64)>,
}

impl ProducerIds {
    /// An empty block; the first id fetches one.
    pub fn new(controller: ControllerHandle) -> ProducerIds {
        ProducerIds {
            controller,
            block: Cell::new((0, 0)),
        }
    }

    /// Takes the next producer id, fetching a new block from the controller when needed.
    pub async fn next(&self) -> Result<i64, ErrorCode> {
        let (next, end) = self.block.get();
        if next < end {
            self.block.set((next + 1, end));
            return Ok(next);
        }
        let (_, outcome) = self
            .controller
            .submit(MetadataCommand::AllocateProducerIds {
                count: PRODUCER_ID_BLOCK,
            })
            .await
            .map_err(|e| controller_error_code(&e))?;
        let CommandOutcome::ProducerIdsAllocated {
            first_producer_id: first,
            ..
        } = outcome
        else {
            return Err(ErrorCode::UnknownServerError);
        };
        self.block
            .set((first + 1, first + i64::from(PRODUCER_ID_BLOCK)));
        Ok(first)
    }
}
