//! Process-wide functions: version, result text, last error, logging, shutdown.

use super::dispatch;
use super::result::{fail, fail_runtime, last_error_ptr, with_last_error};
use super::{boundary, write_out_str};
use crate::ffi::kvs_result::{self, *};
use crate::log::{self, Level};
use crate::runtime;
use std::ffi::{CString, c_char, c_void};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Log levels for `kvs_set_log_callback`.
#[repr(u32)]
pub enum kvs_log_level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// Receives one log line: a `kvs_log_level`, the module it comes from and the
/// message with its length. Strings are NUL-terminated and borrowed for the call.
/// May run on any thread, concurrently: it must be thread-safe.
pub type kvs_log_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        level: u32,
        target: *const c_char,
        message: *const c_char,
        message_len: usize,
    ),
>;

static VERSION: &str = concat!("kvs-signaling ", env!("CARGO_PKG_VERSION"), " (tokio 1, tokio-tungstenite 0.30)\0");

/// The library version, e.g. "kvs-signaling 0.1.0 (...)"; matches the
/// KVS_VERSION_* macros.
///
/// Ownership: static; never free it. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_version() -> *const c_char {
    boundary(|| VERSION.as_ptr().cast())
}

/// The library version as one number, `(MAJOR << 16) | (MINOR << 8) | PATCH`:
/// compare it with `KVS_VERSION_NUMBER` to detect a library older than the
/// header a program was built with.
///
/// Ownership: returns a value; nothing to free. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_version_number() -> u32 {
    boundary(|| {
        let part = |text: &str| text.parse::<u32>().unwrap_or(0);
        (part(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
            | (part(env!("CARGO_PKG_VERSION_MINOR")) << 8)
            | part(env!("CARGO_PKG_VERSION_PATCH"))
    })
}

/// Static text describing a result code; "unknown result code" for values this
/// version does not know.
///
/// Ownership: static; never free it. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_result_str(result: u32) -> *const c_char {
    boundary(|| {
        let text = kvs_result::from_u32(result).map_or("unknown result code\0", kvs_result::text);
        text.as_ptr().cast()
    })
}

/// The C name of a result code (`"KVS_ERR_PROXY_CLOSED"`), for logs;
/// `"KVS_ERR_UNKNOWN"` for values this version does not know.
///
/// Ownership: static; never free it. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_result_name(result: u32) -> *const c_char {
    boundary(|| {
        let name = kvs_result::from_u32(result).map_or(c"KVS_ERR_UNKNOWN", kvs_result::name);
        name.as_ptr()
    })
}

/// Copies the text of the last failure on the calling thread into `buf` (NUL-
/// terminated) and its length into `*out_len`. The text describes the most
/// recent call on this thread that returned an error.
///
/// Ownership: `buf` (`capacity` bytes) and `out_len` are borrowed for the call.
/// `*out_len` always receives the text's length (without the NUL), so a call
/// with `buf` NULL asks for the size; when `buf` is too small, nothing else is
/// written and KVS_ERR_BUFFER_TOO_SMALL is returned. Both NULL:
/// KVS_ERR_NULL_PARAMETER. It never changes the last error itself.
/// Threading: any thread; each thread has its own last error.
///
/// Errors: KVS_ERR_NULL_PARAMETER (`buf` and `out_len` both NULL), KVS_ERR_BUFFER_TOO_SMALL.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_last_error(buf: *mut c_char, capacity: usize, out_len: *mut usize) -> kvs_result {
    boundary(|| {
        // This function leaves the last error as it is, even when it fails, so
        // that a retry with a bigger buffer gets the same text.
        if buf.is_null() && out_len.is_null() {
            return KVS_ERR_NULL_PARAMETER;
        }
        let text = with_last_error(|text| text.to_string_lossy().into_owned());
        if !out_len.is_null() {
            // SAFETY: checked non-NULL; the caller passes a writable size_t.
            unsafe { *out_len = text.len() };
        }
        if buf.is_null() {
            return KVS_OK;
        }
        if capacity < text.len() + 1 {
            return KVS_ERR_BUFFER_TOO_SMALL;
        }
        // SAFETY: `buf` is non-NULL with room for the text and its NUL (checked above).
        unsafe { write_out_str(&text, buf, capacity, ptr::null_mut()) }
    })
}

/// The text of the last failure on the calling thread ("" if none).
///
/// Ownership: borrowed; valid until the next failing call on this thread.
/// Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_last_error_message() -> *const c_char {
    boundary(last_error_ptr)
}

struct LogCallback {
    callback: unsafe extern "C" fn(*mut c_void, u32, *const c_char, *const c_char, usize),
    userdata: *mut c_void,
    free_userdata: super::kvs_free_callback,
}

// SAFETY: the header requires the log callback and its userdata to be usable
// from any thread.
unsafe impl Send for LogCallback {}
// SAFETY: as above.
unsafe impl Sync for LogCallback {}

impl Drop for LogCallback {
    fn drop(&mut self) {
        if let Some(free) = self.free_userdata {
            // SAFETY: the application's finalizer, called exactly once.
            unsafe { free(self.userdata) };
        }
    }
}

/// Sends the library's log lines at or above `min_level` (a `kvs_log_level`) to
/// `callback`, replacing any earlier callback. A NULL `callback` restores the
/// default: lines go to stderr, filtered by the KVS_LOG environment variable
/// (error, warn, info, debug, trace; default warn). KVS_LOG_LEVEL_OFF silences
/// everything.
///
/// Ownership: `userdata` is kept until the callback is replaced, then
/// `free_userdata` (nullable) is called with it exactly once, possibly on
/// another thread. When nothing keeps it (this call fails, `callback` is NULL,
/// or `min_level` is KVS_LOG_LEVEL_OFF), `free_userdata` is called before this
/// returns.
/// Threading: any thread; the callback may run on any thread.
///
/// Errors: KVS_ERR_INVALID_ARGUMENT (an unknown `min_level`), KVS_ERR_FORKED.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_set_log_callback(
    min_level: u32,
    callback: kvs_log_callback,
    userdata: *mut c_void,
    free_userdata: super::kvs_free_callback,
) -> kvs_result {
    boundary(|| {
        let registration = callback.map(|callback| Arc::new(LogCallback { callback, userdata, free_userdata }));
        if callback.is_none()
            && let Some(free) = free_userdata
        {
            // SAFETY: nothing will use userdata; release it now, once.
            unsafe { free(userdata) };
        }
        if runtime::is_forked() {
            // The parent's logger lock may be held by a thread that does not
            // exist here; the registration (and so userdata) is released.
            return fail_runtime(runtime::RuntimeError::Forked);
        }
        if min_level > kvs_log_level::Trace as u32 {
            return fail(KVS_ERR_INVALID_ARGUMENT, format!("min_level {min_level} is not a kvs_log_level"));
        }
        let Some(level) = Level::from_number(min_level) else {
            log::set_sink(Level::Error, Some(Arc::new(|_, _, _| {})));
            return KVS_OK;
        };
        let sink: Option<log::Sink> = registration.map(|registration| {
            Arc::new(move |level: Level, target: &str, message: &str| {
                let _call = LogCall::enter();
                if !LOG_CALLBACKS_OPEN.load(Ordering::SeqCst) {
                    return;
                }
                let target = CString::new(target).unwrap_or_default();
                let message = CString::new(message.replace('\0', "")).unwrap_or_default();
                let len = message.as_bytes().len();
                // SAFETY: the application's callback; strings live for the call.
                unsafe {
                    (registration.callback)(registration.userdata, level as u32, target.as_ptr(), message.as_ptr(), len)
                };
            }) as log::Sink
        });
        log::set_sink(level, sink);
        KVS_OK
    })
}

/// Cleared by `kvs_shutdown`: the C log callback is not called any more,
/// whatever thread of the library (one still running after the runtime was
/// shut down) logs.
static LOG_CALLBACKS_OPEN: AtomicBool = AtomicBool::new(true);
/// Log lines on their way to the C log callback now (entered before the gate
/// is read, so that `kvs_shutdown` can wait for them: sequentially consistent).
static LOG_CALLS: AtomicUsize = AtomicUsize::new(0);

/// One log line on its way to the C callback, counted in [`LOG_CALLS`].
struct LogCall;

impl LogCall {
    fn enter() -> LogCall {
        LOG_CALLS.fetch_add(1, Ordering::SeqCst);
        LogCall
    }
}

impl Drop for LogCall {
    fn drop(&mut self) {
        LOG_CALLS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stops the C log callback: no call starts after this, and the ones running
/// are waited for until `deadline`; false if one still runs then.
fn close_log_callbacks(deadline: Instant) -> bool {
    LOG_CALLBACKS_OPEN.store(false, Ordering::SeqCst);
    while LOG_CALLS.load(Ordering::SeqCst) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Shuts the library down, for good: new calls return KVS_ERR_SHUTDOWN, no
/// callback starts any more (callbacks queued and not started are discarded),
/// connections are dropped without a close handshake, the runtime thread
/// stops, the log callback is not called any more (by any thread), and a
/// callback running now is waited for. The whole call takes at
/// most `timeout_ms`; if the running callback (or a runtime task) has not
/// finished by then it returns KVS_ERR_TIMEOUT, and that callback is the only
/// library code that may still be running. Otherwise, once it returns, the
/// library runs no C callback any more (`free_userdata` of a client runs
/// later, on the thread that frees it with `kvs_client_free`, which stays
/// valid and returns at once after a shutdown). Free your clients first if you
/// want their connections closed cleanly. The library cannot be started again
/// in this process.
///
/// Threading: call it from an application thread; from a callback or a library
/// thread it returns KVS_ERR_WOULD_DEADLOCK.
///
/// Errors: KVS_ERR_WOULD_DEADLOCK, KVS_ERR_TIMEOUT, KVS_ERR_FORKED (in a forked child: nothing is
/// done, at once).
#[unsafe(no_mangle)]
pub extern "C" fn kvs_shutdown(timeout_ms: u32) -> kvs_result {
    boundary(|| {
        if runtime::is_forked() {
            return fail_runtime(runtime::RuntimeError::Forked);
        }
        if dispatch::on_dispatcher() || runtime::on_library_thread() {
            return fail_runtime(runtime::RuntimeError::WouldDeadlock);
        }
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let deadline = Instant::now() + timeout;
        // Callbacks stop first, so that none starts while the runtime winds down.
        dispatch::stop_callbacks();
        if let Err(e) = runtime::shutdown(timeout) {
            return fail_runtime(e);
        }
        let callbacks = dispatch::shutdown(deadline);
        // Threads of the runtime still busy after its shutdown (a blocking
        // credentials fetch) may log: the C log callback is closed too.
        let logs = close_log_callbacks(deadline);
        match (callbacks, logs) {
            (Ok(()), true) => KVS_OK,
            _ => fail(
                KVS_ERR_TIMEOUT,
                format!("a callback was still running after {timeout_ms} ms; it is the last one to run"),
            ),
        }
    })
}
