//! Errors of the client API.

use crate::protocol::ValidationError;
use std::fmt;

/// Why a client call failed. Each variant maps to one C result code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration breaks a rule; the text says which.
    InvalidConfig(String),
    /// A message field breaks the spec; nothing was sent.
    Invalid(ValidationError),
    /// The payload, once encoded, is over the service's 10,000-character limit.
    PayloadTooLarge {
        /// The base64 length.
        encoded_len: usize,
    },
    /// The client is not connected (before connect, after disconnect or a drop).
    NotConnected,
    /// `connect` while connected or connecting.
    AlreadyConnected,
    /// The send queue is full; nothing was queued.
    QueueFull,
    /// The connect did not finish in time.
    Timeout,
    /// TCP connect or DNS failed.
    Network(String),
    /// The service refused the WebSocket upgrade with an HTTP status; the
    /// error type comes from the `x-amzn-ErrorType` header when present, `date`
    /// from the `Date` header (to learn clock skew).
    Refused {
        /// The HTTP status code.
        status: u16,
        /// `x-amzn-ErrorType`, when present.
        error_type: Option<String>,
        /// The response body (possibly empty).
        body: String,
        /// The `Date` header, when present.
        date: Option<String>,
    },
    /// The WebSocket handshake or protocol failed otherwise.
    Handshake(String),
    /// The TLS handshake failed (for example a certificate that does not verify).
    Tls(String),
    /// The connect was abandoned before it finished: the client was
    /// disconnected, or its runtime stopped, meanwhile.
    Cancelled,
    /// A control-plane call (DescribeSignalingChannel, GetSignalingChannelEndpoint,
    /// ...) or the credentials provider failed; the kind names the failure.
    ControlPlane(crate::aws::AwsError),
    /// The request signer (signing by a backend) failed or returned something
    /// the client does not use; the client retries with backoff.
    Signer(crate::aws::SignerError),
    /// The configured presigned URL has expired or was refused (401/403), and
    /// no signer can make a new one: the client stopped (state
    /// `Disconnected`) rather than retry a dead URL.
    PresignedUrlExpired(String),
    /// A connection through the HTTPS proxy failed (the WebSocket or a
    /// control-plane call): the proxy is down, wants credentials, refused the
    /// tunnel or closed it. A reconnecting client keeps retrying.
    Proxy(crate::aws::ProxyError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidConfig(text) => write!(f, "invalid configuration: {text}"),
            ClientError::Invalid(e) => write!(f, "invalid message: {e}"),
            ClientError::PayloadTooLarge { encoded_len } => write!(
                f,
                "payload is {encoded_len} base64 characters; the service accepts at most {}",
                crate::protocol::MAX_PAYLOAD_LEN
            ),
            ClientError::NotConnected => f.write_str("not connected: call connect first (or again after a drop)"),
            ClientError::AlreadyConnected => f.write_str("already connected or connecting"),
            ClientError::QueueFull => f.write_str("send queue is full; retry after earlier sends went out"),
            ClientError::Timeout => f.write_str("connect timed out"),
            ClientError::Network(text) => write!(f, "network error: {text}"),
            ClientError::Refused { status, error_type, body, .. } => {
                write!(f, "the service refused the connection with HTTP {status}")?;
                if let Some(error_type) = error_type {
                    write!(f, " {error_type}")?;
                }
                if !body.is_empty() {
                    write!(f, ": {body}")?;
                }
                Ok(())
            }
            ClientError::Handshake(text) => write!(f, "WebSocket handshake failed: {text}"),
            ClientError::Tls(text) => write!(f, "TLS handshake failed: {text}"),
            ClientError::Cancelled => f.write_str("the connect was abandoned: the client stopped before it finished"),
            ClientError::ControlPlane(e) => write!(f, "control plane: {e}"),
            ClientError::Signer(e) => e.fmt(f),
            ClientError::PresignedUrlExpired(text) => write!(f, "the presigned URL cannot be used any more: {text}"),
            ClientError::Proxy(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<crate::aws::AwsError> for ClientError {
    fn from(e: crate::aws::AwsError) -> ClientError {
        match e {
            crate::aws::AwsError::Signer(e) => ClientError::Signer(e),
            crate::aws::AwsError::Proxy(e) => ClientError::Proxy(e),
            other => ClientError::ControlPlane(other),
        }
    }
}

impl From<ValidationError> for ClientError {
    fn from(e: ValidationError) -> ClientError {
        match e {
            ValidationError::TooLong { field: crate::protocol::Field::MessagePayload, len, .. } => {
                ClientError::PayloadTooLarge { encoded_len: len }
            }
            other => ClientError::Invalid(other),
        }
    }
}
