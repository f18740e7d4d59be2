//! The C side of the control-plane path: credentials from C (static, the
//! environment, or a callback), the ICE server list into caller memory, and
//! the region's STUN URL.

use super::client::{kvs_client, kvs_client_config, open_handle};
use super::dispatch::{Lane, MAX_PENDING_REQUESTS, PendingRequests};
use super::result::{aws_code, fail};
use super::sink::LiveSinks;
use super::{arg_str, boundary, copy_prefix, require_non_null, write_out_str};
use crate::aws::{
    AwsError, ControlPlaneConfig, CreateChannel, Credentials, CredentialsProvider, EndpointVariant, EnvCredentials,
    IotCredentials, IotCredentialsConfig, MAX_TAGS, StaticCredentials, check_tags, stun_url,
};
use crate::client::{AwsConfig, MediaStorageMode};
use crate::ffi::kvs_result::{self, *};
use std::ffi::c_char;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, UNIX_EPOCH};

/// Most URIs copied per ICE server by `kvs_client_get_ice_servers`.
pub const KVS_MAX_ICE_URIS: usize = 8;
/// How long the library waits for the credentials callback.
const CREDENTIALS_CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// What a credentials request counts for in the client's callback backlog.
const CREDENTIALS_JOB_BYTES: usize = 128;

/// Where the credentials callback puts what it fetched; valid while the
/// callback runs (from any thread). A sink kept after its callback returned
/// is refused with KVS_ERR_INVALID_ARGUMENT, never read. Opaque.
pub struct kvs_credentials_sink {
    credentials: Option<Credentials>,
}

/// The sinks of credentials callbacks running now.
static LIVE_SINKS: LiveSinks = LiveSinks::new();

/// Hands credentials to the library from inside a `kvs_credentials_callback`.
/// `session_token` may be NULL; `expiry_unix_s` is when they stop working
/// (0: they do not expire). The strings are copied.
///
/// Ownership: `sink` is the pointer the callback received; the strings are
/// borrowed for the call. Threading: while the callback runs, from any thread.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_INVALID_UTF8, KVS_ERR_CREDENTIALS (an empty or oversized
/// key), KVS_ERR_INVALID_ARGUMENT (`sink` is not the sink of a running callback).
#[unsafe(no_mangle)]
pub extern "C" fn kvs_credentials_sink_set(
    sink: *mut kvs_credentials_sink,
    access_key_id: *const c_char,
    secret_access_key: *const c_char,
    session_token: *const c_char,
    expiry_unix_s: u64,
) -> kvs_result {
    boundary(|| {
        require_non_null!(sink, "sink");
        require_non_null!(access_key_id, "access_key_id");
        require_non_null!(secret_access_key, "secret_access_key");
        let read = |ptr, name| {
            // SAFETY: NUL-terminated strings or NULL, as the header requires.
            unsafe { arg_str(ptr, name, 4096, KVS_ERR_CREDENTIALS) }
        };
        let (key, secret, token) = match (
            read(access_key_id, "access_key_id"),
            read(secret_access_key, "secret_access_key"),
            read(session_token, "session_token"),
        ) {
            (Ok(Some(k)), Ok(Some(s)), Ok(t)) => (k, s, t),
            (Err(code), _, _) | (_, Err(code), _) | (_, _, Err(code)) => return code,
            _ => return fail(KVS_ERR_NULL_PARAMETER, "access_key_id and secret_access_key must not be NULL"),
        };
        let mut credentials = Credentials::new(key, secret, token);
        if expiry_unix_s > 0 {
            let Some(expiry) = UNIX_EPOCH.checked_add(Duration::from_secs(expiry_unix_s)) else {
                return fail(KVS_ERR_CREDENTIALS, format!("expiry_unix_s {expiry_unix_s} is not a time"));
            };
            credentials = credentials.with_expiry(expiry);
        }
        if let Err(e) = credentials.check() {
            return fail(KVS_ERR_CREDENTIALS, e.to_string());
        }
        LIVE_SINKS.with(sink, |sink| {
            sink.credentials = Some(credentials);
            KVS_OK
        })
    })
}

/// One tag of a channel the client creates (`kvs_client_config.tags`);
/// NUL-terminated UTF-8, borrowed for `kvs_client_new`.
#[repr(C)]
pub struct kvs_tag {
    pub key: *const c_char,
    pub value: *const c_char,
}

/// The tags of `config` (`tags`, `tag_count`), checked against the service's limits.
fn config_tags(config: &kvs_client_config) -> Result<Vec<(String, String)>, kvs_result> {
    if config.tag_count == 0 {
        return Ok(Vec::new());
    }
    if config.tags.is_null() {
        return Err(fail(KVS_ERR_NULL_PARAMETER, "config.tags must not be NULL when tag_count is above 0"));
    }
    if config.tag_count > MAX_TAGS {
        return Err(fail(
            KVS_ERR_INVALID_CONFIG,
            format!("{} tags; a channel takes at most {MAX_TAGS}", config.tag_count),
        ));
    }
    // SAFETY: non-NULL and, as the header requires, `tag_count` entries long (at most 50).
    let entries = unsafe { std::slice::from_raw_parts(config.tags, config.tag_count) };
    let mut tags = Vec::with_capacity(entries.len());
    for (i, tag) in entries.iter().enumerate() {
        // Bytes: 4 per character at most; the character limits are checked below.
        // SAFETY: NUL-terminated strings, as the header requires.
        let key = unsafe { arg_str(tag.key, "tag key", 4 * 128, KVS_ERR_INVALID_CONFIG) }?;
        // SAFETY: as above.
        let value = unsafe { arg_str(tag.value, "tag value", 4 * 256, KVS_ERR_INVALID_CONFIG) }?;
        match (key, value) {
            (Some(key), Some(value)) => tags.push((key.to_owned(), value.to_owned())),
            _ => return Err(fail(KVS_ERR_NULL_PARAMETER, format!("config.tags[{i}] has a NULL key or value"))),
        }
    }
    check_tags(&tags).map_err(|e| fail(KVS_ERR_INVALID_CONFIG, e.to_string()))?;
    Ok(tags)
}

/// Credentials from the application's callback, called on the dispatcher thread.
struct CallbackCredentials {
    lane: Weak<Lane>,
    /// Requests posted and not run yet (bounded).
    pending: PendingRequests,
}

impl CredentialsProvider for CallbackCredentials {
    fn fetch(&self) -> Result<Credentials, AwsError> {
        let gone = || AwsError::Credentials("the client is being freed".into());
        let lane = self.lane.upgrade().ok_or_else(gone)?;
        let slot = self.pending.reserve().ok_or_else(|| {
            AwsError::Credentials(format!(
                "the credentials callback has not started on the {MAX_PENDING_REQUESTS} requests before this one"
            ))
        })?;
        let (reply, wait) = std::sync::mpsc::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let given_up = Arc::clone(&abandoned);
        let job = Box::new(move |callbacks: &super::client::Callbacks| {
            let _slot = slot;
            // The library stopped waiting (after 10 s): not asked at all.
            if abandoned.load(Ordering::Acquire) {
                return;
            }
            let mut sink = kvs_credentials_sink { credentials: None };
            let outcome = match callbacks.credentials {
                // SAFETY: the application's callback; `sink` lives for the call.
                // Its return value is a plain integer, checked below.
                Some(cb) => {
                    kvs_result::from_u32(LIVE_SINKS.lend(&mut sink, |sink| unsafe { cb(callbacks.userdata, sink) }))
                }
                None => Some(KVS_ERR_CREDENTIALS),
            };
            let _ = reply.send((outcome, sink.credentials));
        });
        let posted = lane.post(super::dispatch::Kind::Inbound, CREDENTIALS_JOB_BYTES, job);
        drop(lane);
        if !posted {
            return Err(gone());
        }
        match wait.recv_timeout(CREDENTIALS_CALLBACK_TIMEOUT) {
            Ok((Some(KVS_OK), Some(credentials))) => Ok(credentials),
            Ok((Some(KVS_OK), None)) => Err(AwsError::Credentials(
                "the credentials callback returned KVS_OK without calling kvs_credentials_sink_set".into(),
            )),
            Ok((None, _)) => {
                Err(AwsError::Credentials("the credentials callback returned a value that is not a kvs_result".into()))
            }
            Ok((Some(code), _)) => Err(AwsError::Credentials(format!(
                "the credentials callback returned {}",
                code.text().trim_end_matches('\0')
            ))),
            Err(_) => {
                given_up.store(true, Ordering::Release);
                Err(AwsError::Credentials("the credentials callback did not answer within 10 s".into()))
            }
        }
    }
}

/// The provider of a client whose requests a signer signs: never asked.
struct NoCredentials;

impl CredentialsProvider for NoCredentials {
    fn fetch(&self) -> Result<Credentials, AwsError> {
        Err(AwsError::Credentials("signing by a backend: the client holds no credentials".into()))
    }
}

/// The control-plane settings of a C config (`use_control_plane` set).
pub(super) fn aws_config(
    config: &kvs_client_config,
    region: &str,
    request_timeout: Duration,
    lane: &Arc<Lane>,
) -> Result<AwsConfig, kvs_result> {
    let read = |ptr, name| {
        // SAFETY: the header requires NUL-terminated strings or NULL.
        unsafe { arg_str(ptr, name, 4096, KVS_ERR_INVALID_CONFIG) }.map(|s| s.map(str::to_owned))
    };
    let key = read(config.access_key_id, "access_key_id")?;
    let secret = read(config.secret_access_key, "secret_access_key")?;
    let token = read(config.session_token, "session_token")?;
    let iot_endpoint = read(config.iot_credentials_endpoint, "iot_credentials_endpoint")?;
    let provider: Arc<dyn CredentialsProvider> = if config.signer_callback.is_some() {
        // Signing by a backend: the signer signs everything, credentials are never asked.
        Arc::new(NoCredentials)
    } else if config.credentials_callback.is_some() {
        Arc::new(CallbackCredentials { lane: Arc::downgrade(lane), pending: PendingRequests::default() })
    } else if let Some(endpoint) = iot_endpoint {
        Arc::new(iot_credentials(config, &endpoint)?)
    } else if let (Some(key), Some(secret)) = (&key, &secret) {
        let credentials = Credentials::new(key, secret, token.as_deref());
        credentials.check().map_err(|e| fail(KVS_ERR_CREDENTIALS, e.to_string()))?;
        Arc::new(StaticCredentials::new(credentials))
    } else if config.credentials_from_env {
        Arc::new(EnvCredentials)
    } else {
        return Err(fail(
            KVS_ERR_CREDENTIALS,
            "use_control_plane needs credentials: access_key_id + secret_access_key, credentials_from_env, \
             iot_credentials_endpoint (+ role alias, certificate, key), credentials_callback, or a signer_callback",
        ));
    };
    let mut control_plane = ControlPlaneConfig::new(region, provider);
    control_plane.variant = EndpointVariant { fips: config.use_fips, dual_stack: config.use_dual_stack };
    control_plane.endpoint_override = read(config.control_plane_url, "control_plane_url")?;
    control_plane.request_timeout = request_timeout;
    let mut aws = AwsConfig::new(control_plane);
    if config.create_channel {
        aws.create_channel = Some(CreateChannel {
            message_ttl_secs: (config.message_ttl_s > 0).then_some(config.message_ttl_s),
            tags: config_tags(config)?,
        });
    } else if config.tag_count > 0 {
        return Err(fail(KVS_ERR_INVALID_CONFIG, "tags are set on a channel the client creates: set create_channel"));
    }
    aws.endpoint_cache_path = read(config.endpoint_cache_path, "endpoint_cache_path")?.map(PathBuf::from);
    if config.endpoint_cache_ttl_s > 0 {
        aws.endpoint_cache_ttl = Duration::from_secs(u64::from(config.endpoint_cache_ttl_s));
    }
    aws.ice_servers = !config.skip_ice_servers;
    aws.media_storage = match config.media_storage {
        0 => MediaStorageMode::Off,
        1 => MediaStorageMode::Auto,
        2 => MediaStorageMode::On,
        other => {
            return Err(fail(
                KVS_ERR_INVALID_CONFIG,
                format!("media_storage {other} is not KVS_MEDIA_STORAGE_OFF, _AUTO or _ON"),
            ));
        }
    };
    if config.storage_offer_timeout_ms > 0 {
        aws.storage_offer_timeout = Duration::from_millis(u64::from(config.storage_offer_timeout_ms));
    }
    Ok(aws)
}

/// The AWS IoT credentials provider of a C config (`iot_credentials_endpoint` set).
fn iot_credentials(config: &kvs_client_config, endpoint: &str) -> Result<IotCredentials, kvs_result> {
    let read = |ptr, name: &'static str| {
        // SAFETY: the header requires NUL-terminated strings or NULL.
        unsafe { arg_str(ptr, name, 4096, KVS_ERR_INVALID_CONFIG) }.map(|s| s.map(str::to_owned))
    };
    let required = |ptr, name: &'static str| {
        read(ptr, name)?.ok_or_else(|| fail(KVS_ERR_INVALID_CONFIG, format!("iot_credentials_endpoint needs {name}")))
    };
    let role_alias = required(config.iot_role_alias, "iot_role_alias")?;
    let certificate = required(config.iot_certificate_path, "iot_certificate_path")?;
    let key = required(config.iot_private_key_path, "iot_private_key_path")?;
    let thing = read(config.iot_thing_name, "iot_thing_name")?;
    let mut iot = IotCredentialsConfig::new(endpoint, &role_alias, thing.as_deref(), certificate, key);
    iot.ca_bundle = read(config.iot_ca_path, "iot_ca_path")?.map(PathBuf::from);
    iot.proxy = super::client::proxy_config(config)?;
    iot.user_agent_suffix = read(config.user_agent_suffix, "user_agent_suffix")?.filter(|suffix| !suffix.is_empty());
    IotCredentials::new(&iot).map_err(|e| fail(aws_code(&e), e.to_string()))
}

/// One ICE server as `kvs_client_get_ice_servers` writes it: pointers into the
/// caller's buffer, valid as long as that buffer is.
#[repr(C)]
pub struct kvs_ice_server {
    /// `turn:` / `turns:` URIs; `uri_count` of them are set.
    pub uris: [*const c_char; KVS_MAX_ICE_URIS],
    pub uri_count: usize,
    pub username: *const c_char,
    pub password: *const c_char,
    /// Seconds the username and password stay valid from when they were fetched.
    pub ttl_seconds: u32,
}

/// Copies the client's current ICE server list (TURN URIs, username, password,
/// TTL) into caller memory: up to `capacity` entries into `out_servers`, their
/// strings into `buf` (`buf_capacity` bytes), the entries' pointers pointing
/// into `buf`. `*out_count` receives the list's length and `*out_buf_len` the
/// bytes the strings need; if either capacity is too small nothing else is
/// written and KVS_ERR_BUFFER_TOO_SMALL is returned. `out_servers` and `buf`
/// both NULL ask for the sizes only (KVS_OK). The list is empty until the
/// first GetIceServerConfig answered (and without `use_control_plane`).
///
/// `entry_size` is the caller's `sizeof(kvs_ice_server)`: entries are
/// `entry_size` bytes apart and the library writes no more than that of each,
/// so a binary built against an older, smaller struct keeps working. The
/// header's inline `kvs_client_get_ice_servers` passes it.
///
/// Ownership: `client` is borrowed; the outputs are caller-owned. Threading:
/// any thread, callbacks included.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_FORKED, KVS_ERR_CLOSED, KVS_ERR_BUFFER_TOO_SMALL,
/// KVS_ERR_INVALID_ARGUMENT (`entry_size` below the first versioned layout).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn kvs_client_get_ice_servers_sized(
    client: *const kvs_client,
    out_servers: *mut kvs_ice_server,
    capacity: usize,
    entry_size: usize,
    buf: *mut c_char,
    buf_capacity: usize,
    out_count: *mut usize,
    out_buf_len: *mut usize,
) -> kvs_result {
    boundary(|| {
        let handle = match open_handle(client) {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        require_non_null!(out_count, "out_count");
        require_non_null!(out_buf_len, "out_buf_len");
        if entry_size < size_of::<kvs_ice_server>() {
            return fail(
                KVS_ERR_INVALID_ARGUMENT,
                format!("entry_size {entry_size} is below sizeof(kvs_ice_server) ({})", size_of::<kvs_ice_server>()),
            );
        }
        let servers = handle.client.ice_servers();
        let strings = |s: &crate::aws::IceServer| {
            s.uris.iter().take(KVS_MAX_ICE_URIS).map(|u| u.len() + 1).sum::<usize>()
                + s.username.len()
                + s.password.len()
                + 2
        };
        let needed: usize = servers.iter().map(strings).sum();
        // SAFETY: both checked non-NULL; the caller passes writable size_t's.
        unsafe {
            *out_count = servers.len();
            *out_buf_len = needed;
        }
        if servers.is_empty() || (out_servers.is_null() && buf.is_null()) {
            return KVS_OK;
        }
        if servers.len().checked_mul(entry_size).is_none() {
            return fail(KVS_ERR_INVALID_ARGUMENT, format!("entry_size {entry_size} is not the size of an entry"));
        }
        if out_servers.is_null() || buf.is_null() || capacity < servers.len() || buf_capacity < needed {
            return fail(
                KVS_ERR_BUFFER_TOO_SMALL,
                format!("{} servers need {} entries and {needed} bytes", servers.len(), servers.len()),
            );
        }
        let mut offset = 0usize;
        let mut put = |text: &str| {
            // SAFETY: `buf` holds `needed` bytes (checked) and offset + len + 1 <= needed.
            let at = unsafe { buf.add(offset) };
            // SAFETY: as above; write_out_str checks the remaining capacity.
            unsafe { write_out_str(text, at, buf_capacity - offset, std::ptr::null_mut()) };
            offset += text.len() + 1;
            at.cast_const()
        };
        for (i, server) in servers.iter().enumerate() {
            let mut entry = kvs_ice_server {
                uris: [std::ptr::null(); KVS_MAX_ICE_URIS],
                uri_count: server.uris.len().min(KVS_MAX_ICE_URIS),
                username: std::ptr::null(),
                password: std::ptr::null(),
                ttl_seconds: u32::try_from(server.ttl.as_secs()).unwrap_or(u32::MAX),
            };
            for (slot, uri) in entry.uris.iter_mut().zip(server.uris.iter()) {
                *slot = put(uri);
            }
            entry.username = put(&server.username);
            entry.password = put(&server.password);
            // SAFETY: `out_servers` holds `capacity` >= servers.len() entries of
            // `entry_size` bytes (checked); one entry's prefix is written.
            unsafe { copy_prefix(&entry, out_servers.cast::<u8>().add(i * entry_size).cast(), entry_size) };
        }
        KVS_OK
    })
}

/// Rust callers' equivalent of the header's inline `kvs_client_get_ice_servers`.
pub fn kvs_client_get_ice_servers(
    client: *const kvs_client,
    out_servers: *mut kvs_ice_server,
    capacity: usize,
    buf: *mut c_char,
    buf_capacity: usize,
    out_count: *mut usize,
    out_buf_len: *mut usize,
) -> kvs_result {
    let size = size_of::<kvs_ice_server>();
    kvs_client_get_ice_servers_sized(client, out_servers, capacity, size, buf, buf_capacity, out_count, out_buf_len)
}

/// Writes the STUN URL of `region` (e.g. `stun:stun.kinesisvideo.us-west-2.amazonaws.com:443`,
/// with the FIPS or dual-stack variant) into `buf`, NUL-terminated, and its
/// length into `*out_len` (nullable). On KVS_ERR_BUFFER_TOO_SMALL only
/// `*out_len` is written: the length needed, without the NUL. A NULL `buf`
/// asks for the length only (KVS_OK); `buf` and `out_len` both NULL is
/// KVS_ERR_NULL_PARAMETER.
///
/// Ownership: all pointers borrowed for the call. Threading: any thread.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_INVALID_UTF8, KVS_ERR_INVALID_CONFIG (a region outside
/// `[a-z0-9-]+`), KVS_ERR_BUFFER_TOO_SMALL.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_stun_url(
    region: *const c_char,
    use_fips: bool,
    use_dual_stack: bool,
    buf: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> kvs_result {
    boundary(|| {
        require_non_null!(region, "region");
        if buf.is_null() && out_len.is_null() {
            return fail(KVS_ERR_NULL_PARAMETER, "buf and out_len must not both be NULL");
        }
        // SAFETY: NUL-terminated, as the header requires.
        let region = match unsafe { arg_str(region, "region", 64, KVS_ERR_INVALID_CONFIG) } {
            Ok(Some(r)) => r,
            Ok(None) => return fail(KVS_ERR_NULL_PARAMETER, "region must not be NULL"),
            Err(code) => return code,
        };
        match stun_url(region, EndpointVariant { fips: use_fips, dual_stack: use_dual_stack }) {
            // SAFETY: `buf` has `capacity` bytes; out_len is NULL or writable.
            Ok(url) => unsafe { write_out_str(&url, buf, capacity, out_len) },
            Err(e) => fail(KVS_ERR_INVALID_CONFIG, e.to_string()),
        }
    })
}
