//! The AWS side of the client: SigV4 signing (the presigned WebSocket URL and
//! header-signed HTTPS calls, through the aws-sigv4 crate), credential
//! providers (the AWS IoT credentials provider among them), the control-plane and GetIceServerConfig calls, endpoint names,
//! the endpoint cache, TLS settings and clock-skew correction.
//!
//! Bring-up (spec §9.1): [`ControlPlane::resolve_channel`] (cache, or
//! DescribeSignalingChannel / CreateSignalingChannel, then
//! GetSignalingChannelEndpoint) → [`ControlPlane::get_ice_server_config`] →
//! [`ControlPlane::presign_wss_url`] → connect with [`ControlPlane::tls`].
//!
//! No C types here, and no secret ever reaches a log line, an error or a
//! `Debug` output: credentials and ICE passwords print redacted, what a
//! server sends back is scrubbed of the secret key, the session token and the
//! request's signature in any encoding before it is cut, and URLs are logged
//! without their query. Endpoints the service returns (or the endpoint cache
//! holds) are never weaker than the control plane: `wss://` and `https://`
//! under an `https://` control plane.

mod cache;
mod clock;
mod control_plane;
mod credentials;
pub mod endpoints;
mod error;
pub(crate) mod fuzzing;
pub mod http;
pub mod ice;
pub mod iot;
pub mod proxy;
mod redact;
pub mod signer;
pub mod sigv4;
pub mod tls;

pub use cache::{CachedEndpoints, EndpointCache};
pub use clock::{ClockSkew, TimeSource, parse_http_date, system_time};
pub use control_plane::{
    ChannelEndpoints, ChannelInfo, ChannelRef, ControlPlane, ControlPlaneConfig, CreateChannel, MAX_TAG_KEY,
    MAX_TAG_VALUE, MAX_TAGS, MediaStorageConfiguration, ResolvedChannel, check_tags,
};
pub use credentials::{CachingCredentials, Credentials, CredentialsProvider, EnvCredentials, StaticCredentials};
pub use endpoints::{EndpointVariant, control_plane_url, resolve_control_plane, stun_url};
pub(crate) use error::cut_for_display;
pub use error::{AwsError, ServiceError, is_clock_skew_message};
pub use http::{HttpClient, HttpResponse};
pub use ice::IceServer;
pub use iot::{DeviceKey, IotCredentials, IotCredentialsConfig, IotError, IotErrorKind};
pub use proxy::{Dialer, Proxy, ProxyConfig, ProxyError};
pub(crate) use redact::Redactor;
pub use signer::{HttpSignRequest, RequestSigner, SigV4Signer, SignerError, WssSignRequest};
#[cfg(feature = "rustls")]
pub use tls::tls_config;
pub use tls::{ClientIdentity, TlsClient, TlsStream};
