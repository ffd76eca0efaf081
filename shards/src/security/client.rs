//! What a request's handler knows of its client: its address, the listener it came through,
//! and its principal.

use std::rc::Rc;

use super::listener::SecurityProtocol;
use super::tls::TlsAcceptor;

/// One listener, as a shard serves it.
pub struct ListenerContext {
    /// Its name (`PLAINTEXT`, `CLIENT`, ...).
    pub name: String,
    /// How its connections are secured.
    pub protocol: SecurityProtocol,
    /// The host and port its clients are told to connect to (Metadata, FindCoordinator).
    pub advertised: (String, i32),
    /// The shard's TLS acceptor, on an SSL or SASL_SSL listener.
    pub tls: Option<Rc<TlsAcceptor>>,
}

/// The client of a request.
#[derive(Clone)]
pub struct ClientContext {
    /// The client's IP address, as Kafka's group APIs report it and ACLs match it.
    pub host: Rc<str>,
    /// The listener its connection came through.
    pub listener: Rc<ListenerContext>,
    /// Its principal: `User:NAME` after SASL, the certificate's DN with mTLS, else
    /// `User:ANONYMOUS`.
    pub principal: Rc<str>,
    /// The connection's quotas and mute (`quota::connection`).
    pub quotas: Rc<crate::quota::connection::ConnectionQuotas>,
}
