//! One Kafka request from this broker to another broker of the cluster (the transaction
//! coordinator's WriteTxnMarkers to a partition's leader), on the controller quorum's tokio
//! runtime: a single node never calls another broker.
//!
//! A connection per call: markers go out once per transaction and partition leader, far
//! rarer than produce; a pool would keep a socket per broker for little gain yet.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_net::{Request, RequestHeader, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest a call may take, connecting included.
pub const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response frame accepted from another broker.
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The client id other brokers see in their logs.
const CLIENT_ID: &str = "sluice-broker";

/// Sends `request` at `version` to the broker at `endpoint` (`host:port`) and decodes its
/// answer; every failure (connect, I/O, a malformed or oversized frame, the timeout) is a
/// message naming it.
pub async fn call(endpoint: &str, version: i16, request: Request) -> Result<Response, String> {
    tokio::time::timeout(BROKER_CALL_TIMEOUT, exchange(endpoint, version, request))
        .await
        .map_err(|_| {
            format!(
                "broker {endpoint} did not answer within {} s",
                BROKER_CALL_TIMEOUT.as_secs()
            )
        })?
}

async fn exchange(endpoint: &str, version: i16, request: Request) -> Result<Response, String> {
    let api_key = request.api_key() as i16;
    let header = RequestHeader {
        request_api_key: api_key,
        request_api_version: version,
        correlation_id: 1,
        client_id: Some(CLIENT_ID.to_string()),
    };
    let mut frame = BytesMut::new();
    sluice_net::encode_request(&header, &request, &mut frame)
        .map_err(|e| format!("encoding a request to broker {endpoint}: {e}"))?;
    let io = |e: std::io::Error| format!("broker {endpoint}: {e}");
    let mut stream = tokio::net::TcpStream::connect(endpoint).await.map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    stream.write_all(&frame).await.map_err(io)?;
    let len = stream.read_u32().await.map_err(io)? as usize;
    if len > RESPONSE_BYTES_MAX {
        return Err(format!(
            "broker {endpoint} answered a frame of {len} bytes (at most {RESPONSE_BYTES_MAX})"
        ));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.map_err(io)?;
    let (correlation_id, response) =
        sluice_net::decode_response(api_key, version, Bytes::from(body))
            .map_err(|e| format!("broker {endpoint}'s answer: {e}"))?;
    if correlation_id != header.correlation_id {
        return Err(format!(
            "broker {endpoint} answered correlation id {correlation_id}, not {}",
            header.correlation_id
        ));
    }
    Ok(response)
}
