//! Signing by a backend from C: `kvs_client_config.signer_callback` is asked
//! for the presigned WebSocket URL of each connect attempt and for the
//! headers of each control-plane call, and answers through a
//! `kvs_sign_sink` (the library copies what it is given).

use super::client::Callbacks;
use super::dispatch::{Kind, Lane, MAX_PENDING_REQUESTS, PendingRequests};
use super::result::fail;
use super::sink::LiveSinks;
use super::{arg_str, boundary, require_non_null};
use crate::aws::signer::{MAX_SIGNED_HEADER_BYTES, MAX_SIGNED_HEADERS, MAX_SIGNED_URL_LEN};
use crate::aws::{HttpSignRequest, RequestSigner, SignerError, WssSignRequest};
use crate::ffi::kvs_result::{self, *};
use crate::protocol::Role;
use futures_util::future::BoxFuture;
use std::ffi::{CString, c_char};
use std::fmt;
use std::ptr;
use std::sync::Weak;
use std::time::UNIX_EPOCH;

/// The longest URL `kvs_sign_sink_set_url` accepts (bytes, without the NUL).
pub const KVS_MAX_SIGNED_URL_LEN: usize = 8192;
// The C constant is the Rust one (cbindgen needs a literal).
const _: () = assert!(KVS_MAX_SIGNED_URL_LEN == MAX_SIGNED_URL_LEN);
/// What a signer request counts for in the client's callback backlog.
const SIGN_JOB_BYTES: usize = 256;

/// What a `kvs_sign_request` asks for (`kind`).
#[repr(u32)]
pub enum kvs_sign_kind {
    /// The presigned WebSocket URL of a connect attempt: answer with
    /// `kvs_sign_sink_set_url`.
    WssUrl = 1,
    /// The signature of a control-plane HTTPS call: answer with
    /// `kvs_sign_sink_add_header` for each header to add (`authorization`,
    /// `x-amz-date`, `x-amz-security-token`).
    HttpRequest = 2,
}

/// One HTTP header, borrowed for the call.
#[repr(C)]
pub struct kvs_header {
    pub name: *const c_char,
    pub value: *const c_char,
}

/// What the signer callback is asked to sign. Every pointer is borrowed for
/// the call only; strings are NUL-terminated UTF-8, NULL when absent. The
/// struct may grow at the end in a later minor version.
#[repr(C)]
pub struct kvs_sign_request {
    /// A `kvs_sign_kind` value.
    pub kind: u32,
    /// KVS_SIGN_KIND_WSS_URL: the channel's WSS endpoint for the role
    /// (`wss://host[/path]`, no query; `ws://` for a local emulator); the URL
    /// returned must be for its scheme, host and port. KVS_SIGN_KIND_HTTP_REQUEST:
    /// the full URL of the call.
    pub url: *const c_char,
    /// A `kvs_role` value (WSS URL only; 0 for HTTP requests).
    pub role: u32,
    /// `X-Amz-ChannelARN` (WSS URL only, else NULL).
    pub channel_arn: *const c_char,
    /// `X-Amz-ClientId` of a viewer (WSS URL only, else NULL).
    pub client_id: *const c_char,
    /// The region to sign for.
    pub region: *const c_char,
    /// The time to sign at, milliseconds since 1970: local time corrected by
    /// the clock skew the library learnt from the service.
    pub time_unix_ms: u64,
    /// "POST" (HTTP request only, else NULL).
    pub method: *const c_char,
    /// The headers that will be sent (`host`, `content-type`, `user-agent`;
    /// HTTP request only, else NULL and 0).
    pub headers: *const kvs_header,
    pub header_count: usize,
    /// The JSON body (HTTP request only, else NULL and 0); not NUL-terminated.
    pub body: *const u8,
    pub body_len: usize,
}

/// Where the signer callback puts its answer; valid while the callback runs
/// (sink calls from other threads meanwhile are serialized). A sink kept
/// after its callback returned is refused with KVS_ERR_INVALID_ARGUMENT,
/// never read. Opaque.
pub struct kvs_sign_sink {
    kind: u32,
    url: Option<String>,
    headers: Vec<(String, String)>,
    /// The first refusal of a sink call, reported whatever the callback returns.
    error: Option<SignerError>,
}

/// Asked to sign (see `kvs_sign_request`): answer through `sink` (valid during
/// this call only) and return KVS_OK, or return an error code (the attempt
/// then fails with KVS_ERR_SIGNER_FAILED and the client retries with
/// backoff). Runs on the dispatcher thread, like every callback of the
/// client; it may block (e.g. an HTTPS call to the application's backend),
/// but other callbacks wait meanwhile, and the library gives up on it after
/// `signer_timeout_ms`. A request the library gave up on before the callback
/// started is dropped without calling it, and at most 4 requests wait for
/// the callback at once (more fail at once with KVS_ERR_SIGNER_FAILED).
///
/// The return value is a `kvs_result` value (a `uint32_t`); a value that is
/// not a known code counts as a failure.
pub type kvs_signer_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut std::ffi::c_void,
        request: *const kvs_sign_request,
        sink: *mut kvs_sign_sink,
    ) -> u32,
>;

/// The sinks of signer callbacks running now.
static LIVE_SINKS: LiveSinks = LiveSinks::new();

impl kvs_sign_sink {
    fn refuse(&mut self, error: SignerError) -> kvs_result {
        let code = super::result::signer_code(&error);
        let text = error.to_string();
        self.error.get_or_insert(error);
        fail(code, text)
    }
}

/// Hands the presigned WebSocket URL to the library from inside a
/// `kvs_signer_callback` asked for KVS_SIGN_KIND_WSS_URL. The string is copied.
/// The URL is checked when the callback returns (`wss://`, the endpoint's host
/// and port, a query); a refusal here or there fails the connect attempt with
/// the same code, whatever the callback returns.
///
/// Ownership: `sink` is the pointer the callback received; `url` is borrowed
/// for the call. Threading: while the callback runs, from any thread.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_INVALID_UTF8, KVS_ERR_INVALID_ARGUMENT (the request
/// is not for a URL, or `sink` is not the sink of a running callback), KVS_ERR_SIGNER_TOO_LONG (over KVS_MAX_SIGNED_URL_LEN bytes).
#[unsafe(no_mangle)]
pub extern "C" fn kvs_sign_sink_set_url(sink: *mut kvs_sign_sink, url: *const c_char) -> kvs_result {
    boundary(|| {
        require_non_null!(sink, "sink");
        require_non_null!(url, "url");
        LIVE_SINKS.with(sink, |sink| {
            if sink.kind != kvs_sign_kind::WssUrl as u32 {
                return fail(KVS_ERR_INVALID_ARGUMENT, "this request asks for headers (kvs_sign_sink_add_header)");
            }
            // SAFETY: NUL-terminated, as the header requires; scanned up to the bound + 1.
            match unsafe { arg_str(url, "url", MAX_SIGNED_URL_LEN, KVS_ERR_SIGNER_TOO_LONG) } {
                Ok(Some(url)) => {
                    sink.url = Some(url.to_owned());
                    KVS_OK
                }
                Ok(None) => fail(KVS_ERR_NULL_PARAMETER, "url must not be NULL"),
                Err(KVS_ERR_SIGNER_TOO_LONG) => {
                    sink.refuse(SignerError::TooLong { len: MAX_SIGNED_URL_LEN + 1, max: MAX_SIGNED_URL_LEN })
                }
                Err(code) => code,
            }
        })
    })
}

/// Adds one header to the signed request from inside a `kvs_signer_callback`
/// asked for KVS_SIGN_KIND_HTTP_REQUEST. The strings are copied. At most 16
/// headers and 8,192 bytes of names and values in all; names must be HTTP
/// tokens other than `host`, `content-length`, `transfer-encoding` and
/// `connection`, values printable ASCII (no CR or LF). A refusal fails the
/// call being signed with the same code, whatever the callback returns.
///
/// Ownership: `sink` is the pointer the callback received; the strings are
/// borrowed for the call. Threading: while the callback runs, from any thread.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_INVALID_UTF8, KVS_ERR_INVALID_ARGUMENT (the request
/// is not for headers, or `sink` is not the sink of a running callback), KVS_ERR_SIGNER_TOO_LONG, KVS_ERR_SIGNER_INVALID_URL (a header that is
/// not valid HTTP or may not be set).
#[unsafe(no_mangle)]
pub extern "C" fn kvs_sign_sink_add_header(
    sink: *mut kvs_sign_sink,
    name: *const c_char,
    value: *const c_char,
) -> kvs_result {
    boundary(|| {
        require_non_null!(sink, "sink");
        require_non_null!(name, "name");
        require_non_null!(value, "value");
        LIVE_SINKS.with(sink, |sink| {
            if sink.kind != kvs_sign_kind::HttpRequest as u32 {
                return fail(KVS_ERR_INVALID_ARGUMENT, "this request asks for a URL (kvs_sign_sink_set_url)");
            }
            let read = |ptr, what| {
                // SAFETY: NUL-terminated strings, as the header requires.
                unsafe { arg_str(ptr, what, MAX_SIGNED_HEADER_BYTES, KVS_ERR_SIGNER_TOO_LONG) }
            };
            let (name, value) = match (read(name, "name"), read(value, "value")) {
                (Ok(Some(name)), Ok(Some(value))) => (name.to_owned(), value.to_owned()),
                (Err(KVS_ERR_SIGNER_TOO_LONG), _) | (_, Err(KVS_ERR_SIGNER_TOO_LONG)) => {
                    let max = MAX_SIGNED_HEADER_BYTES;
                    return sink.refuse(SignerError::TooLong { len: max + 1, max });
                }
                (Err(code), _) | (_, Err(code)) => return code,
                _ => return fail(KVS_ERR_NULL_PARAMETER, "name and value must not be NULL"),
            };
            let mut headers = sink.headers.clone();
            headers.push((name, value));
            match crate::aws::signer::check_signed_headers(&headers) {
                Ok(()) => {
                    sink.headers = headers;
                    KVS_OK
                }
                Err(error) => sink.refuse(error),
            }
        })
    })
}

/// Signing by the application's `signer_callback`, run on the dispatcher
/// thread in the client's callback lane; the library awaits the answer
/// without blocking a runtime thread (the caller bounds the wait).
pub(super) struct CallbackSigner {
    pub(super) lane: Weak<Lane>,
    /// Requests posted and not run yet (bounded).
    pub(super) pending: PendingRequests,
}

impl fmt::Debug for CallbackSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallbackSigner")
    }
}

/// A request as owned C strings, kept alive for the callback.
struct OwnedRequest {
    kind: kvs_sign_kind,
    url: CString,
    role: u32,
    channel_arn: Option<CString>,
    client_id: Option<CString>,
    region: CString,
    time_unix_ms: u64,
    method: Option<CString>,
    headers: Vec<(CString, CString)>,
    body: Vec<u8>,
}

fn cstring(text: &str) -> CString {
    CString::new(text.replace('\0', "")).unwrap_or_default()
}

fn unix_ms(time: std::time::SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl OwnedRequest {
    /// Calls `callback` with a C view of the request and a fresh sink.
    fn run(&self, callbacks: &Callbacks) -> (Option<kvs_result>, kvs_sign_sink) {
        let kind = match self.kind {
            kvs_sign_kind::WssUrl => kvs_sign_kind::WssUrl as u32,
            kvs_sign_kind::HttpRequest => kvs_sign_kind::HttpRequest as u32,
        };
        let mut sink = kvs_sign_sink { kind, url: None, headers: Vec::new(), error: None };
        let Some(callback) = callbacks.signer else {
            return (Some(KVS_ERR_SIGNER_FAILED), sink);
        };
        let headers: Vec<kvs_header> =
            self.headers.iter().map(|(n, v)| kvs_header { name: n.as_ptr(), value: v.as_ptr() }).collect();
        let opt = |text: &Option<CString>| text.as_ref().map_or(ptr::null(), |t| t.as_ptr());
        let view = kvs_sign_request {
            kind,
            url: self.url.as_ptr(),
            role: self.role,
            channel_arn: opt(&self.channel_arn),
            client_id: opt(&self.client_id),
            region: self.region.as_ptr(),
            time_unix_ms: self.time_unix_ms,
            method: opt(&self.method),
            headers: if headers.is_empty() { ptr::null() } else { headers.as_ptr() },
            header_count: headers.len(),
            body: if self.body.is_empty() { ptr::null() } else { self.body.as_ptr() },
            body_len: self.body.len(),
        };
        // SAFETY: the application's callback; `view`, its strings and `sink`
        // live for the call. Its return value is a plain integer, checked.
        let code = LIVE_SINKS.lend(&mut sink, |sink| unsafe { callback(callbacks.userdata, &view, sink) });
        (kvs_result::from_u32(code), sink)
    }
}

impl CallbackSigner {
    /// Posts `request` to the client's callback lane and awaits the sink.
    async fn ask(&self, request: OwnedRequest) -> Result<kvs_sign_sink, SignerError> {
        let gone = || SignerError::Failed("the client is being freed".into());
        let lane = self.lane.upgrade().ok_or_else(gone)?;
        let slot = self.pending.reserve().ok_or_else(|| {
            SignerError::Failed(format!(
                "the signer callback has not started on the {MAX_PENDING_REQUESTS} requests before this one"
            ))
        })?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Box::new(move |callbacks: &Callbacks| {
            let _slot = slot;
            // The library stopped waiting (signer timeout): not asked at all.
            if !reply.is_closed() {
                let _ = reply.send(request.run(callbacks));
            }
        });
        let posted = lane.post(Kind::Inbound, SIGN_JOB_BYTES, job);
        drop(lane);
        if !posted {
            return Err(gone());
        }
        match answer.await {
            Err(_) => Err(gone()),
            Ok((_, sink)) if sink.error.is_some() => Err(sink.error.unwrap_or_else(gone)),
            Ok((Some(KVS_OK), sink)) => Ok(sink),
            Ok((None, _)) => {
                Err(SignerError::Failed("the signer callback returned a value that is not a kvs_result".into()))
            }
            Ok((Some(code), _)) => {
                Err(SignerError::Failed(format!("the signer callback returned {}", code.text().trim_end_matches('\0'))))
            }
        }
    }
}

impl RequestSigner for CallbackSigner {
    fn presign_wss_url<'a>(&'a self, request: &'a WssSignRequest) -> BoxFuture<'a, Result<String, SignerError>> {
        Box::pin(async move {
            let owned = OwnedRequest {
                kind: kvs_sign_kind::WssUrl,
                url: cstring(&request.endpoint),
                role: match request.role {
                    Role::Master => super::kvs_role::Master as u32,
                    Role::Viewer => super::kvs_role::Viewer as u32,
                },
                channel_arn: Some(cstring(&request.channel_arn)),
                client_id: request.client_id.as_deref().map(cstring),
                region: cstring(&request.region),
                time_unix_ms: unix_ms(request.time),
                method: None,
                headers: Vec::new(),
                body: Vec::new(),
            };
            let sink = self.ask(owned).await?;
            sink.url.ok_or_else(|| {
                SignerError::Failed("the signer callback returned KVS_OK without calling kvs_sign_sink_set_url".into())
            })
        })
    }

    fn sign_request<'a>(
        &'a self,
        request: &'a HttpSignRequest,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, SignerError>> {
        Box::pin(async move {
            let owned = OwnedRequest {
                kind: kvs_sign_kind::HttpRequest,
                url: cstring(&request.url),
                role: 0,
                channel_arn: None,
                client_id: None,
                region: cstring(&request.region),
                time_unix_ms: unix_ms(request.time),
                method: Some(cstring(&request.method)),
                headers: request.headers.iter().map(|(n, v)| (cstring(n), cstring(v))).collect(),
                body: request.body.clone(),
            };
            let sink = self.ask(owned).await?;
            if sink.headers.is_empty() {
                return Err(SignerError::Failed(
                    "the signer callback returned KVS_OK without calling kvs_sign_sink_add_header".into(),
                ));
            }
            Ok(sink.headers)
        })
    }
}

/// `MAX_SIGNED_HEADERS` is the header bound of `kvs_sign_sink_add_header`.
const _: () = assert!(MAX_SIGNED_HEADERS == 16);

/// The configured presigned URL with its expiry, if any.
pub(super) fn presigned_url(
    config: &super::kvs_client_config,
) -> Result<Option<crate::client::PresignedUrl>, kvs_result> {
    // SAFETY: the header requires NUL-terminated config strings.
    let url = unsafe { arg_str(config.presigned_url, "presigned_url", MAX_SIGNED_URL_LEN, KVS_ERR_INVALID_CONFIG) }?;
    let Some(url) = url else { return Ok(None) };
    if config.presigned_url_expiry_unix_s == 0 {
        return Err(fail(KVS_ERR_INVALID_CONFIG, "presigned_url needs presigned_url_expiry_unix_s"));
    }
    let expires_at = UNIX_EPOCH.checked_add(std::time::Duration::from_secs(config.presigned_url_expiry_unix_s));
    let Some(expires_at) = expires_at else {
        return Err(fail(KVS_ERR_INVALID_CONFIG, "presigned_url_expiry_unix_s is out of range"));
    };
    Ok(Some(crate::client::PresignedUrl { url: url.to_owned(), expires_at }))
}
