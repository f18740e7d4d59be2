//! Result codes and the thread-local last-error text.

use crate::aws::{AwsError, IotErrorKind, ProxyError, SignerError};
use crate::client::ClientError;
use crate::protocol::{Field, ValidationError};
use crate::runtime::RuntimeError;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::sync::OnceLock;

/// Result of every fallible function. `KVS_OK` is 0; error values are stable and
/// never reused. Passed to C as `uint32_t`.
/// cbindgen:prefix-with-name=false
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum kvs_result {
    KVS_OK = 0,
    /// A required pointer argument was NULL.
    KVS_ERR_NULL_PARAMETER = 1,
    /// A string argument was not valid UTF-8.
    KVS_ERR_INVALID_UTF8 = 2,
    /// An argument is out of range (an unknown action or log level, for
    /// example; an unknown role in a config is KVS_ERR_INVALID_CONFIG).
    KVS_ERR_INVALID_ARGUMENT = 3,
    /// The client configuration breaks a rule (ARN, client id, endpoint, ...).
    KVS_ERR_INVALID_CONFIG = 4,
    /// An id (recipient or correlation id) was empty.
    KVS_ERR_ID_EMPTY = 5,
    /// An id was longer than 256 characters.
    KVS_ERR_ID_TOO_LONG = 6,
    /// An id contained a character outside `[a-zA-Z0-9_.-]`.
    KVS_ERR_ID_PATTERN = 7,
    /// The payload (SDP, candidate or raw) was empty.
    KVS_ERR_PAYLOAD_EMPTY = 8,
    /// The payload is over 10,000 characters once base64-encoded.
    KVS_ERR_PAYLOAD_TOO_LARGE = 9,
    /// A master send without a recipient client id.
    KVS_ERR_RECIPIENT_REQUIRED = 10,
    /// A viewer send with a recipient client id (viewers always reach the master).
    KVS_ERR_RECIPIENT_NOT_ALLOWED = 11,
    /// The client is not connected.
    KVS_ERR_NOT_CONNECTED = 12,
    /// The client is already connected or connecting.
    KVS_ERR_ALREADY_CONNECTED = 13,
    /// The send queue is full; nothing was queued.
    KVS_ERR_QUEUE_FULL = 14,
    /// The operation did not finish within its timeout.
    KVS_ERR_TIMEOUT = 15,
    /// TCP connect or name resolution failed.
    KVS_ERR_NETWORK = 16,
    /// The service refused the connection with an HTTP status not covered below.
    KVS_ERR_CONNECT_REFUSED = 17,
    /// The channel does not exist (HTTP 404).
    KVS_ERR_NOT_FOUND = 18,
    /// Credentials or signature refused (HTTP 401/403).
    KVS_ERR_ACCESS_DENIED = 19,
    /// A service limit was hit (ClientLimitExceededException, e.g. too many viewers).
    KVS_ERR_LIMIT_EXCEEDED = 20,
    /// The WebSocket handshake failed for another reason.
    KVS_ERR_HANDSHAKE = 21,
    /// An output buffer is too small; the needed length was reported.
    KVS_ERR_BUFFER_TOO_SMALL = 22,
    /// A blocking call from a library thread (a callback or a runtime worker).
    KVS_ERR_WOULD_DEADLOCK = 23,
    /// `kvs_client_free` from inside a callback.
    KVS_ERR_IN_CALLBACK = 24,
    /// `kvs_shutdown` was called; the library cannot be used again.
    KVS_ERR_SHUTDOWN = 25,
    /// The process forked after the library started; only fork + exec is supported.
    KVS_ERR_FORKED = 26,
    /// A bug in the library was caught at the boundary; details in the last error.
    KVS_ERR_PANIC = 27,
    /// The library's runtime thread could not be started.
    KVS_ERR_RUNTIME = 28,
    /// The TLS handshake failed (e.g. a certificate that does not verify).
    KVS_ERR_TLS = 29,
    /// The service refused an argument (InvalidArgumentException).
    KVS_ERR_SERVICE_INVALID_ARGUMENT = 30,
    /// The channel exists already or is not available now (ResourceInUseException).
    KVS_ERR_RESOURCE_IN_USE = 31,
    /// The service failed otherwise (HTTP 5xx, an account limit, ...).
    KVS_ERR_SERVICE = 32,
    /// The service answered with something that is not what the API promises.
    KVS_ERR_BAD_RESPONSE = 33,
    /// No credentials: none configured, or the credentials callback failed.
    KVS_ERR_CREDENTIALS = 34,
    /// The client is being freed or was freed: `kvs_client_free` was called
    /// (seen by a callback of that client still running, another thread, or
    /// a second free), or the pointer never named a client.
    KVS_ERR_CLOSED = 35,
    /// `kvs_client_connect` was abandoned because `kvs_client_disconnect`
    /// stopped the client meanwhile.
    KVS_ERR_CANCELLED = 36,
    /// The request signer (`signer_callback`, signing by a backend) failed:
    /// it returned an error code or did not answer within `signer_timeout_ms`.
    KVS_ERR_SIGNER_FAILED = 37,
    /// The request signer returned more than the library accepts (a URL over
    /// KVS_MAX_SIGNED_URL_LEN bytes, too many or too long headers).
    KVS_ERR_SIGNER_TOO_LONG = 38,
    /// The request signer returned a URL that does not parse, lacks a query or
    /// is for another host or port, or headers that are not valid HTTP.
    KVS_ERR_SIGNER_INVALID_URL = 39,
    /// The request signer returned a URL that is not `wss://` for a `wss://`
    /// endpoint (a downgrade to cleartext, refused).
    KVS_ERR_SIGNER_NOT_WSS = 40,
    /// The configured presigned URL has expired (or the service refused it
    /// with 403) and no signer is configured to make a new one; the client
    /// stopped instead of retrying with a dead URL.
    KVS_ERR_PRESIGNED_URL_EXPIRED = 41,
    /// The HTTPS proxy is down: no TCP connection to it, or no reply to
    /// CONNECT in time. A reconnecting client keeps retrying.
    KVS_ERR_PROXY_UNREACHABLE = 42,
    /// The HTTPS proxy answered 407: credentials missing from `proxy_url`, or refused.
    KVS_ERR_PROXY_AUTH_REQUIRED = 43,
    /// The HTTPS proxy refused the tunnel (403 or another non-2xx status,
    /// named in the last error), or its reply was not HTTP or too long.
    KVS_ERR_PROXY_REFUSED = 44,
    /// The HTTPS proxy closed the connection before answering CONNECT, or
    /// the tunnel closed during the TLS handshake with the service.
    KVS_ERR_PROXY_CLOSED = 45,
    /// The AWS IoT credentials provider refused the device certificate (a TLS
    /// alert in the handshake, or HTTP 401).
    KVS_ERR_IOT_CERTIFICATE_REFUSED = 46,
    /// The AWS IoT credentials provider knows no such role alias (HTTP 404).
    KVS_ERR_IOT_ROLE_ALIAS_NOT_FOUND = 47,
    /// The AWS IoT credentials provider forbade the request (HTTP 403: the
    /// certificate may not assume the role alias, or the thing is not attached to it).
    KVS_ERR_IOT_FORBIDDEN = 48,
}

use kvs_result::*;

impl kvs_result {
    /// Static text for the code.
    pub fn text(self) -> &'static str {
        match self {
            KVS_OK => "ok\0",
            KVS_ERR_NULL_PARAMETER => "a required pointer argument was NULL\0",
            KVS_ERR_INVALID_UTF8 => "a string argument was not valid UTF-8\0",
            KVS_ERR_INVALID_ARGUMENT => "an argument is out of range\0",
            KVS_ERR_INVALID_CONFIG => "the client configuration is invalid\0",
            KVS_ERR_ID_EMPTY => "an id was empty\0",
            KVS_ERR_ID_TOO_LONG => "an id was longer than 256 characters\0",
            KVS_ERR_ID_PATTERN => "an id contained a character outside [a-zA-Z0-9_.-]\0",
            KVS_ERR_PAYLOAD_EMPTY => "the payload was empty\0",
            KVS_ERR_PAYLOAD_TOO_LARGE => "the payload is over 10,000 characters once base64-encoded\0",
            KVS_ERR_RECIPIENT_REQUIRED => "a master must name the recipient viewer\0",
            KVS_ERR_RECIPIENT_NOT_ALLOWED => "a viewer must not name a recipient\0",
            KVS_ERR_NOT_CONNECTED => "the client is not connected\0",
            KVS_ERR_ALREADY_CONNECTED => "the client is already connected or connecting\0",
            KVS_ERR_QUEUE_FULL => "the send queue is full\0",
            KVS_ERR_TIMEOUT => "the operation timed out\0",
            KVS_ERR_NETWORK => "network error\0",
            KVS_ERR_CONNECT_REFUSED => "the service refused the connection\0",
            KVS_ERR_NOT_FOUND => "the channel was not found\0",
            KVS_ERR_ACCESS_DENIED => "access denied\0",
            KVS_ERR_LIMIT_EXCEEDED => "a service limit was exceeded\0",
            KVS_ERR_HANDSHAKE => "the WebSocket handshake failed\0",
            KVS_ERR_BUFFER_TOO_SMALL => "an output buffer is too small\0",
            KVS_ERR_WOULD_DEADLOCK => "a blocking call was made from a library thread\0",
            KVS_ERR_IN_CALLBACK => "the client cannot be freed from inside its own callback\0",
            KVS_ERR_SHUTDOWN => "the library was shut down\0",
            KVS_ERR_FORKED => "the process forked after the library started\0",
            KVS_ERR_PANIC => "internal error (caught panic)\0",
            KVS_ERR_RUNTIME => "the library runtime could not start\0",
            KVS_ERR_TLS => "the TLS handshake failed\0",
            KVS_ERR_SERVICE_INVALID_ARGUMENT => "the service refused an argument\0",
            KVS_ERR_RESOURCE_IN_USE => "the channel exists already or is not available now\0",
            KVS_ERR_SERVICE => "the service failed\0",
            KVS_ERR_BAD_RESPONSE => "the service answered with an unexpected response\0",
            KVS_ERR_CREDENTIALS => "no usable credentials\0",
            KVS_ERR_CLOSED => "the client is being freed\0",
            KVS_ERR_CANCELLED => "the connect was cancelled by a disconnect\0",
            KVS_ERR_SIGNER_FAILED => "the request signer failed\0",
            KVS_ERR_SIGNER_TOO_LONG => "the request signer returned too much\0",
            KVS_ERR_SIGNER_INVALID_URL => "the request signer returned an invalid URL or header\0",
            KVS_ERR_SIGNER_NOT_WSS => "the request signer returned a URL that is not wss://\0",
            KVS_ERR_PRESIGNED_URL_EXPIRED => "the presigned URL has expired\0",
            KVS_ERR_PROXY_UNREACHABLE => "the HTTPS proxy is unreachable\0",
            KVS_ERR_PROXY_AUTH_REQUIRED => "the HTTPS proxy requires authentication\0",
            KVS_ERR_PROXY_REFUSED => "the HTTPS proxy refused the tunnel\0",
            KVS_ERR_PROXY_CLOSED => "the HTTPS proxy closed the tunnel\0",
            KVS_ERR_IOT_CERTIFICATE_REFUSED => "the AWS IoT credentials provider refused the device certificate\0",
            KVS_ERR_IOT_ROLE_ALIAS_NOT_FOUND => "the AWS IoT credentials provider knows no such role alias\0",
            KVS_ERR_IOT_FORBIDDEN => "the AWS IoT credentials provider forbade the request\0",
        }
    }

    /// The code's C name (`KVS_ERR_PROXY_CLOSED`), for logs.
    pub fn name(self) -> &'static CStr {
        static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
        let names = NAMES
            .get_or_init(|| ALL.iter().map(|code| CString::new(format!("{code:?}")).unwrap_or_default()).collect());
        ALL.iter().position(|code| *code == self).and_then(|at| names.get(at)).map_or(c"KVS_ERR_UNKNOWN", |n| n)
    }

    /// Maps a raw code back to the enum; `None` for unknown values.
    pub fn from_u32(code: u32) -> Option<kvs_result> {
        ALL.iter().copied().find(|r| *r as u32 == code)
    }
}

/// Every code, in value order.
const ALL: [kvs_result; 49] = [
    KVS_OK,
    KVS_ERR_NULL_PARAMETER,
    KVS_ERR_INVALID_UTF8,
    KVS_ERR_INVALID_ARGUMENT,
    KVS_ERR_INVALID_CONFIG,
    KVS_ERR_ID_EMPTY,
    KVS_ERR_ID_TOO_LONG,
    KVS_ERR_ID_PATTERN,
    KVS_ERR_PAYLOAD_EMPTY,
    KVS_ERR_PAYLOAD_TOO_LARGE,
    KVS_ERR_RECIPIENT_REQUIRED,
    KVS_ERR_RECIPIENT_NOT_ALLOWED,
    KVS_ERR_NOT_CONNECTED,
    KVS_ERR_ALREADY_CONNECTED,
    KVS_ERR_QUEUE_FULL,
    KVS_ERR_TIMEOUT,
    KVS_ERR_NETWORK,
    KVS_ERR_CONNECT_REFUSED,
    KVS_ERR_NOT_FOUND,
    KVS_ERR_ACCESS_DENIED,
    KVS_ERR_LIMIT_EXCEEDED,
    KVS_ERR_HANDSHAKE,
    KVS_ERR_BUFFER_TOO_SMALL,
    KVS_ERR_WOULD_DEADLOCK,
    KVS_ERR_IN_CALLBACK,
    KVS_ERR_SHUTDOWN,
    KVS_ERR_FORKED,
    KVS_ERR_PANIC,
    KVS_ERR_RUNTIME,
    KVS_ERR_TLS,
    KVS_ERR_SERVICE_INVALID_ARGUMENT,
    KVS_ERR_RESOURCE_IN_USE,
    KVS_ERR_SERVICE,
    KVS_ERR_BAD_RESPONSE,
    KVS_ERR_CREDENTIALS,
    KVS_ERR_CLOSED,
    KVS_ERR_CANCELLED,
    KVS_ERR_SIGNER_FAILED,
    KVS_ERR_SIGNER_TOO_LONG,
    KVS_ERR_SIGNER_INVALID_URL,
    KVS_ERR_SIGNER_NOT_WSS,
    KVS_ERR_PRESIGNED_URL_EXPIRED,
    KVS_ERR_PROXY_UNREACHABLE,
    KVS_ERR_PROXY_AUTH_REQUIRED,
    KVS_ERR_PROXY_REFUSED,
    KVS_ERR_PROXY_CLOSED,
    KVS_ERR_IOT_CERTIFICATE_REFUSED,
    KVS_ERR_IOT_ROLE_ALIAS_NOT_FOUND,
    KVS_ERR_IOT_FORBIDDEN,
];

/// The code for a validation failure.
pub fn validation_code(e: &ValidationError) -> kvs_result {
    match e {
        ValidationError::Missing(Field::MessagePayload) => KVS_ERR_PAYLOAD_EMPTY,
        ValidationError::Missing(_) => KVS_ERR_ID_EMPTY,
        ValidationError::TooLong { field: Field::MessagePayload, .. } => KVS_ERR_PAYLOAD_TOO_LARGE,
        ValidationError::TooLong { .. } => KVS_ERR_ID_TOO_LONG,
        ValidationError::BadPattern(_) | ValidationError::ReservedPrefix => KVS_ERR_ID_PATTERN,
        ValidationError::MasterWithoutRecipient => KVS_ERR_RECIPIENT_REQUIRED,
        ValidationError::ViewerWithRecipient => KVS_ERR_RECIPIENT_NOT_ALLOWED,
        ValidationError::PayloadNotBase64 | ValidationError::UnknownAction(_) => KVS_ERR_INVALID_ARGUMENT,
    }
}

/// The code for a client error.
pub fn client_code(e: &ClientError) -> kvs_result {
    match e {
        ClientError::InvalidConfig(_) => KVS_ERR_INVALID_CONFIG,
        ClientError::Invalid(v) => validation_code(v),
        ClientError::PayloadTooLarge { .. } => KVS_ERR_PAYLOAD_TOO_LARGE,
        ClientError::NotConnected => KVS_ERR_NOT_CONNECTED,
        ClientError::AlreadyConnected => KVS_ERR_ALREADY_CONNECTED,
        ClientError::QueueFull => KVS_ERR_QUEUE_FULL,
        ClientError::Timeout => KVS_ERR_TIMEOUT,
        ClientError::Network(_) => KVS_ERR_NETWORK,
        ClientError::Refused { status: 404, .. } => KVS_ERR_NOT_FOUND,
        ClientError::Refused { status: 401 | 403, .. } => KVS_ERR_ACCESS_DENIED,
        ClientError::Refused { status: 429, .. } => KVS_ERR_LIMIT_EXCEEDED,
        ClientError::Refused { error_type: Some(t), .. } if t == "ClientLimitExceededException" => {
            KVS_ERR_LIMIT_EXCEEDED
        }
        ClientError::Refused { .. } => KVS_ERR_CONNECT_REFUSED,
        ClientError::Handshake(_) => KVS_ERR_HANDSHAKE,
        ClientError::Tls(_) => KVS_ERR_TLS,
        ClientError::Cancelled => KVS_ERR_CANCELLED,
        ClientError::Signer(e) => signer_code(e),
        ClientError::PresignedUrlExpired(_) => KVS_ERR_PRESIGNED_URL_EXPIRED,
        ClientError::ControlPlane(e) => aws_code(e),
        ClientError::Proxy(e) => proxy_code(e),
    }
}

/// The code for a failure through the HTTPS proxy.
pub fn proxy_code(e: &ProxyError) -> kvs_result {
    match e {
        ProxyError::Unreachable(_) => KVS_ERR_PROXY_UNREACHABLE,
        ProxyError::AuthRequired(_) => KVS_ERR_PROXY_AUTH_REQUIRED,
        ProxyError::Refused { .. } | ProxyError::BadReply(_) => KVS_ERR_PROXY_REFUSED,
        ProxyError::Closed(_) => KVS_ERR_PROXY_CLOSED,
    }
}

/// The code for a control-plane or credentials failure.
pub fn aws_code(e: &AwsError) -> kvs_result {
    match e {
        AwsError::NotFound(_) => KVS_ERR_NOT_FOUND,
        AwsError::AccessDenied(_) => KVS_ERR_ACCESS_DENIED,
        AwsError::Throttled(_) => KVS_ERR_LIMIT_EXCEEDED,
        AwsError::InvalidArgument(_) => KVS_ERR_SERVICE_INVALID_ARGUMENT,
        AwsError::ResourceInUse(_) => KVS_ERR_RESOURCE_IN_USE,
        AwsError::Service(_) => KVS_ERR_SERVICE,
        AwsError::Network(_) => KVS_ERR_NETWORK,
        AwsError::Tls(_) => KVS_ERR_TLS,
        AwsError::Timeout(_) => KVS_ERR_TIMEOUT,
        AwsError::BadResponse(_) => KVS_ERR_BAD_RESPONSE,
        AwsError::Credentials(_) => KVS_ERR_CREDENTIALS,
        AwsError::Config(_) => KVS_ERR_INVALID_CONFIG,
        AwsError::Signer(e) => signer_code(e),
        AwsError::Proxy(e) => proxy_code(e),
        AwsError::IotCredentials(e) => match e.kind {
            IotErrorKind::CertificateRefused => KVS_ERR_IOT_CERTIFICATE_REFUSED,
            IotErrorKind::UnknownRoleAlias => KVS_ERR_IOT_ROLE_ALIAS_NOT_FOUND,
            IotErrorKind::Forbidden => KVS_ERR_IOT_FORBIDDEN,
            IotErrorKind::Throttled => KVS_ERR_LIMIT_EXCEEDED,
            IotErrorKind::BadResponse => KVS_ERR_BAD_RESPONSE,
            IotErrorKind::InvalidRequest | IotErrorKind::ServerError => KVS_ERR_SERVICE,
        },
    }
}

/// The code for a signer failure.
pub fn signer_code(e: &SignerError) -> kvs_result {
    match e {
        SignerError::TooLong { .. } => KVS_ERR_SIGNER_TOO_LONG,
        SignerError::InvalidUrl(_) => KVS_ERR_SIGNER_INVALID_URL,
        SignerError::NotSecure(_) => KVS_ERR_SIGNER_NOT_WSS,
        _ => KVS_ERR_SIGNER_FAILED,
    }
}

/// The code for a runtime error.
pub fn runtime_code(e: RuntimeError) -> kvs_result {
    match e {
        RuntimeError::ShutDown => KVS_ERR_SHUTDOWN,
        RuntimeError::Forked => KVS_ERR_FORKED,
        RuntimeError::WouldDeadlock => KVS_ERR_WOULD_DEADLOCK,
        RuntimeError::StartFailed => KVS_ERR_RUNTIME,
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `text` as this thread's last error and returns `code`.
pub fn fail(code: kvs_result, text: impl Into<String>) -> kvs_result {
    let mut text = text.into();
    text.retain(|c| c != '\0');
    let text = CString::new(text).unwrap_or_default();
    // Not recorded from a thread's last destructors (a pthread key's, run
    // after the thread-local storage is gone): the call still returns its code.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = text);
    code
}

/// Records a client error and returns its code.
pub fn fail_client(e: &ClientError) -> kvs_result {
    fail(client_code(e), e.to_string())
}

/// Records a runtime error and returns its code.
pub fn fail_runtime(e: RuntimeError) -> kvs_result {
    let code = runtime_code(e);
    fail(code, code.text().trim_end_matches('\0'))
}

/// Runs `f` with this thread's last-error text (empty once the thread's
/// storage is gone).
pub fn with_last_error<R>(f: impl FnOnce(&CString) -> R) -> R {
    f(&LAST_ERROR.try_with(|last| last.borrow().clone()).unwrap_or_default())
}

/// Pointer to this thread's last-error text; valid until the next failing call
/// on this thread ("" once the thread's storage is gone).
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.try_with(|last| last.borrow().as_ptr()).unwrap_or(c"".as_ptr())
}
