//! The S3 backend (aws-sdk-s3): AWS S3 or any S3-compatible store (MinIO,
//! CubeFS, OSS, s3s-fs). The SDK's own retries are off: the handle retries
//! with its bounded policy, so one limit governs every request.

use std::ops::Range;
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::error::ObjectStoreError;
use crate::limits::{
    CONNECT_TIMEOUT, DELETE_BATCH_MAX, LIST_KEYS_MAX, MULTIPART_PART_BYTES,
    MULTIPART_PARTS_IN_FLIGHT_MAX, MULTIPART_THRESHOLD_BYTES, REQUEST_ATTEMPT_TIMEOUT,
};
use crate::store::{BoxFuture, ObjectBackend, ObjectMeta, Result};

/// Where and how to reach the bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// None: AWS's endpoint for the region. For other stores, e.g.
    /// `http://127.0.0.1:9000`.
    pub endpoint_url: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Path-style URLs (`host/bucket/key`), which most S3-compatible stores
    /// need; virtual-hosted style (`bucket.host/key`) otherwise.
    pub force_path_style: bool,
    /// Prepended to every key (e.g. `cluster-1/`), so clusters can share a
    /// bucket.
    pub key_prefix: String,
    /// Explicit keys; None: the standard AWS chain (environment, profile,
    /// web identity, ECS / EC2 instance roles).
    pub credentials: Option<S3Credentials>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint_url", &self.endpoint_url)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("force_path_style", &self.force_path_style)
            .field("key_prefix", &self.key_prefix)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<explicit>"),
            )
            .finish()
    }
}

#[derive(Clone)]
pub(crate) struct S3Backend {
    inner: Arc<S3Inner>,
}

struct S3Inner {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Backend {
    /// Builds the client on `runtime` (the credential chain may do I/O).
    pub(crate) fn new(config: &S3Config, runtime: &tokio::runtime::Handle) -> Result<S3Backend> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        if let Some(c) = &config.credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                None,
                None,
                "sluice-config",
            ));
        }
        let shared = runtime.block_on(loader.load());
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(REQUEST_ATTEMPT_TIMEOUT)
                    .build(),
            )
            // Plain Content-Length bodies: every S3-compatible store takes
            // them (aws-chunked trailers are not universal).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(url) = &config.endpoint_url {
            builder = builder.endpoint_url(url.clone());
        }
        Ok(S3Backend {
            inner: Arc::new(S3Inner {
                client: Client::from_conf(builder.build()),
                bucket: config.bucket.clone(),
                prefix: config.key_prefix.clone(),
            }),
        })
    }
}

impl ObjectBackend for S3Backend {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn put(&self, key: String, data: Bytes) -> BoxFuture<Result<()>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.put(&key, data, false).await })
    }

    fn put_if_absent(&self, key: String, data: Bytes) -> BoxFuture<Result<()>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.put(&key, data, true).await })
    }

    fn get(&self, key: String, range: Option<Range<u64>>) -> BoxFuture<Result<Bytes>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let mut request = inner
                .client
                .get_object()
                .bucket(&inner.bucket)
                .key(inner.full(&key));
            if let Some(r) = &range {
                request = request.range(format!("bytes={}-{}", r.start, r.end - 1));
            }
            let output = request.send().await.map_err(|e| {
                let mapped = map_error("get", &key, e);
                match (&mapped, &range) {
                    (ObjectStoreError::Other { message, .. }, Some(r))
                        if message.contains("InvalidRange") =>
                    {
                        ObjectStoreError::InvalidRange {
                            key: key.clone(),
                            start: r.start,
                            end: r.end,
                            size: 0,
                        }
                    }
                    _ => mapped,
                }
            })?;
            let body = output
                .body
                .collect()
                .await
                .map_err(|e| ObjectStoreError::Unavailable {
                    operation: "get",
                    key: key.clone(),
                    message: format!("reading the body: {e}"),
                })?;
            Ok(body.into_bytes())
        })
    }

    fn head(&self, key: String) -> BoxFuture<Result<u64>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let output = inner
                .client
                .head_object()
                .bucket(&inner.bucket)
                .key(inner.full(&key))
                .send()
                .await
                .map_err(|e| map_error("head", &key, e))?;
            Ok(output.content_length().unwrap_or(0).max(0) as u64)
        })
    }

    fn list(&self, prefix: String) -> BoxFuture<Result<Vec<ObjectMeta>>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let mut found = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let output = inner
                    .client
                    .list_objects_v2()
                    .bucket(&inner.bucket)
                    .prefix(inner.full(&prefix))
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| map_error("list", &prefix, e))?;
                for object in output.contents() {
                    let Some(key) = object.key().and_then(|k| k.strip_prefix(&inner.prefix)) else {
                        continue;
                    };
                    found.push(ObjectMeta {
                        key: key.to_string(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                    });
                }
                if found.len() > LIST_KEYS_MAX {
                    return Err(ObjectStoreError::Other {
                        operation: "list",
                        key: prefix,
                        message: format!("more than {LIST_KEYS_MAX} keys (LIST_KEYS_MAX)"),
                    });
                }
                match output.next_continuation_token() {
                    Some(next) if output.is_truncated() == Some(true) => {
                        token = Some(next.to_string())
                    }
                    _ => break,
                }
            }
            found.sort();
            Ok(found)
        })
    }

    fn delete(&self, keys: Vec<String>) -> BoxFuture<Result<()>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            for batch in keys.chunks(DELETE_BATCH_MAX) {
                let objects = batch
                    .iter()
                    .map(|k| ObjectIdentifier::builder().key(inner.full(k)).build())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| other("delete", &batch[0], e.to_string()))?;
                let delete = Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()
                    .map_err(|e| other("delete", &batch[0], e.to_string()))?;
                let output = inner
                    .client
                    .delete_objects()
                    .bucket(&inner.bucket)
                    .delete(delete)
                    .send()
                    .await
                    .map_err(|e| map_error("delete", &batch[0], e))?;
                if let Some(e) = output
                    .errors()
                    .iter()
                    .find(|e| e.code() != Some("NoSuchKey"))
                {
                    let key = e.key().unwrap_or_default().to_string();
                    let message = format!("{:?}: {:?}", e.code(), e.message());
                    return Err(match e.code() {
                        Some("InternalError" | "SlowDown" | "ServiceUnavailable") => {
                            ObjectStoreError::Unavailable {
                                operation: "delete",
                                key,
                                message,
                            }
                        }
                        _ => other("delete", &key, message),
                    });
                }
            }
            Ok(())
        })
    }
}

impl S3Inner {
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn put(&self, key: &str, data: Bytes, if_absent: bool) -> Result<()> {
        let operation = if if_absent { "put_if_absent" } else { "put" };
        if data.len() > MULTIPART_THRESHOLD_BYTES {
            return self.put_multipart(key, data, if_absent).await;
        }
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .content_length(data.len() as i64)
            .body(ByteStream::from(data));
        if if_absent {
            request = request.if_none_match("*");
        }
        request
            .send()
            .await
            .map_err(|e| map_error(operation, key, e))?;
        Ok(())
    }

    /// Parts of `MULTIPART_PART_BYTES`, at most `MULTIPART_PARTS_IN_FLIGHT_MAX`
    /// in flight; any failure aborts the upload (no parts left behind).
    async fn put_multipart(&self, key: &str, data: Bytes, if_absent: bool) -> Result<()> {
        let operation = if if_absent { "put_if_absent" } else { "put" };
        let full = self.full(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| map_error(operation, key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| other(operation, key, "no upload id".to_string()))?
            .to_string();
        let parts: Vec<(i32, Bytes)> = (0..data.len())
            .step_by(MULTIPART_PART_BYTES)
            .enumerate()
            .map(|(i, start)| {
                let end = (start + MULTIPART_PART_BYTES).min(data.len());
                (i as i32 + 1, data.slice(start..end))
            })
            .collect();
        let uploaded: Result<Vec<CompletedPart>> = futures::stream::iter(parts)
            .map(|(number, part)| {
                let request = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_length(part.len() as i64)
                    .body(ByteStream::from(part));
                async move {
                    let output = request
                        .send()
                        .await
                        .map_err(|e| map_error(operation, key, e))?;
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(output.e_tag().map(str::to_string))
                        .build())
                }
            })
            .buffered(MULTIPART_PARTS_IN_FLIGHT_MAX)
            .try_collect()
            .await;
        let completed = match uploaded {
            Ok(parts) => {
                let mut request = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    );
                if if_absent {
                    request = request.if_none_match("*");
                }
                request
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| map_error(operation, key, e))
            }
            Err(e) => Err(e),
        };
        if completed.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        completed
    }
}

fn other(operation: &'static str, key: &str, message: String) -> ObjectStoreError {
    ObjectStoreError::Other {
        operation,
        key: key.to_string(),
        message,
    }
}

/// Maps an SDK error: no answer, a timeout, 5xx, 429 or "slow down" are
/// `Unavailable` (retriable); 404 `NotFound`; 412 `AlreadyExists` (the
/// conditional create); anything else `Other`.
fn map_error<E>(operation: &'static str, key: &str, e: SdkError<E>) -> ObjectStoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let key = key.to_string();
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = match &e {
        SdkError::ServiceError(service) => service.err().code().map(str::to_string),
        _ => None,
    };
    let message = DisplayErrorContext(&e).to_string();
    match (&e, status, code.as_deref()) {
        (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), _, _)
        | (SdkError::ResponseError(_), _, _) => ObjectStoreError::Unavailable {
            operation,
            key,
            message,
        },
        (_, Some(404), _) | (_, _, Some("NoSuchKey" | "NotFound")) => {
            ObjectStoreError::NotFound { key }
        }
        (_, Some(412), _) | (_, _, Some("PreconditionFailed")) => {
            ObjectStoreError::AlreadyExists { key }
        }
        (_, Some(409 | 429 | 500..=599), _)
        | (_, _, Some("SlowDown" | "RequestTimeout" | "InternalError")) => {
            ObjectStoreError::Unavailable {
                operation,
                key,
                message,
            }
        }
        _ => ObjectStoreError::Other {
            operation,
            key,
            message: format!("{message} (status {status:?}, code {code:?})"),
        },
    }
}
