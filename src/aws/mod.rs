//! The AWS side of the client: SigV4 signing (the presigned WebSocket URL and
//! header-signed HTTPS calls, through the aws-sigv4 crate), credential
//! providers, the control-plane and GetIceServerConfig calls, endpoint names,
//! the endpoint cache, TLS settings and clock-skew correction.
//!
//! Bring-up (spec §9.1): [`ControlPlane::resolve_channel`] (cache, or
//! DescribeSignalingChannel / CreateSignalingChannel, then
//! GetSignalingChannelEndpoint) → [`ControlPlane::get_ice_server_config`] →
//! [`ControlPlane::presign_wss_url`] → connect with [`ControlPlane::tls`].
//!
//! No C types here, and no secret ever reaches a log line, an error or a
//! `Debug` output: credentials and ICE passwords print redacted, service
//! messages are scrubbed of the secret key and session token, and URLs are
//! logged without their query.

mod cache;
mod clock;
mod control_plane;
mod credentials;
pub mod endpoints;
mod error;
pub(crate) mod fuzzing;
pub mod http;
pub mod ice;
pub mod sigv4;
pub mod tls;

pub use cache::{CachedEndpoints, EndpointCache};
pub use clock::{ClockSkew, TimeSource, parse_http_date, system_time};
pub use control_plane::{
    ChannelEndpoints, ChannelInfo, ChannelRef, ControlPlane, ControlPlaneConfig, CreateChannel, ResolvedChannel,
};
pub use credentials::{CachingCredentials, Credentials, CredentialsProvider, EnvCredentials, StaticCredentials};
pub use endpoints::{EndpointVariant, control_plane_url, resolve_control_plane, stun_url};
pub use error::{AwsError, ServiceError, is_clock_skew_message};
pub use http::{HttpClient, HttpResponse};
pub use ice::IceServer;
#[cfg(feature = "rustls")]
pub use tls::tls_config;
pub use tls::{TlsClient, TlsStream};
