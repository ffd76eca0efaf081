//! Kafka wire protocol: framing, request/response codec, error codes, RecordBatch view.
