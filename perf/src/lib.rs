//! Load generator and benchmark driver: OpenMessaging Benchmark workloads over the Kafka protocol.
