//! Who a client is and how its connection is secured: listeners and their security
//! protocols, TLS, SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER), the principal
//! each connection ends up with, and what that principal may do (the ACL authorizer).

pub mod authorizer;
pub mod client;
pub mod jwks;
pub mod jwt;
pub mod listener;
pub mod oauthbearer;
pub mod scram;
pub mod session;
pub mod stream;
pub mod tls;

pub use authorizer::{Access, AuthorizerConfig};
pub use client::{ClientContext, ListenerContext};
pub use jwt::{JwtValidator, OAuthBearerConfig};
pub use listener::{
    ClientAuth, ListenerConfig, SaslMechanism, SecurityConfig, SecurityProtocol, TlsFiles,
    parse_listeners,
};
pub use session::{ANONYMOUS, Session, Verdict};
pub use stream::ClientStream;
pub use tls::{TlsAcceptor, load_server_config};
