#![allow(non_camel_case_types)]
// The exported functions take C pointers by design: their contract is in the
// header, and `unsafe` on an `extern "C"` function means nothing to a C caller.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

//! The C ABI: `#[repr(C)]` types, opaque handles, the panic boundary, last-error
//! text, the callback dispatcher and the log hook. Thin: it checks and converts
//! arguments, then forwards to [`crate::client`]. Every `unsafe` that touches C
//! memory lives in this module.

mod aws;
mod client;
mod dispatch;
mod global;
mod result;
mod signer;
mod sink;

pub use aws::*;
pub use client::*;
pub use global::*;
pub use result::kvs_result;
pub use signer::*;

use result::fail;
use std::cell::Cell;
use std::ffi::{CStr, c_char};
use std::sync::Once;

thread_local! {
    /// Set while a thread runs inside `ffi_boundary!`, so the panic hook knows
    /// the panic will be caught and reported as KVS_ERR_PANIC.
    static IN_BOUNDARY: Cell<u32> = const { Cell::new(0) };
}

/// Installs, once, a panic hook that records panics caught at the boundary
/// without printing or symbolising a backtrace (a backtrace under
/// `RUST_BACKTRACE=1` grew a host's RSS by tens of MB); other panics go to the
/// hook that was there before.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_BOUNDARY.with(Cell::get) > 0 {
                let text = format!("panic: {info}");
                fail(kvs_result::KVS_ERR_PANIC, text);
            } else {
                previous(info);
            }
        }));
    });
}

/// What an exported function returns when its body panicked.
pub(crate) trait PanicDefault {
    fn panic_default() -> Self;
}

impl PanicDefault for kvs_result {
    fn panic_default() -> Self {
        kvs_result::KVS_ERR_PANIC
    }
}

impl PanicDefault for u32 {
    fn panic_default() -> Self {
        0
    }
}

impl PanicDefault for () {
    fn panic_default() -> Self {}
}

impl<T> PanicDefault for *const T {
    fn panic_default() -> Self {
        std::ptr::null()
    }
}

/// Runs an exported body, catching any panic so it never crosses into C.
pub(crate) fn boundary<R: PanicDefault>(body: impl FnOnce() -> R) -> R {
    install_panic_hook();
    IN_BOUNDARY.with(|depth| depth.set(depth.get() + 1));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    IN_BOUNDARY.with(|depth| depth.set(depth.get() - 1));
    outcome.unwrap_or_else(|_| R::panic_default())
}

/// Returns `KVS_ERR_NULL_PARAMETER` (with last-error text naming the argument)
/// from the enclosing function when `$ptr` is NULL.
macro_rules! require_non_null {
    ($ptr:expr, $name:literal) => {
        if $ptr.is_null() {
            return $crate::ffi::result::fail(
                $crate::ffi::kvs_result::KVS_ERR_NULL_PARAMETER,
                concat!($name, " must not be NULL"),
            );
        }
    };
}
pub(crate) use require_non_null;

/// Why a C string argument was refused.
pub(crate) enum StrError {
    Null,
    TooLong,
    Utf8,
}

/// Reads a NUL-terminated UTF-8 string of at most `max` bytes, scanning no
/// further than `max + 1` bytes for the terminator.
///
/// # Safety
/// `ptr` is NULL or points to memory readable up to its NUL or `max + 1` bytes.
pub(crate) unsafe fn c_str<'a>(ptr: *const c_char, max: usize) -> Result<&'a str, StrError> {
    if ptr.is_null() {
        return Err(StrError::Null);
    }
    // SAFETY: the caller guarantees readability up to the NUL or max + 1 bytes;
    // strnlen reads no further than that.
    let len = unsafe { libc::strnlen(ptr, max + 1) };
    if len > max {
        return Err(StrError::TooLong);
    }
    // SAFETY: `len` bytes were just scanned and a NUL follows them.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    std::str::from_utf8(bytes).map_err(|_| StrError::Utf8)
}

/// Reads an optional string argument (NULL means absent) and maps refusals to
/// result codes with last-error text naming the argument.
///
/// # Safety
/// As for [`c_str`].
pub(crate) unsafe fn arg_str<'a>(
    ptr: *const c_char,
    name: &str,
    max: usize,
    too_long: kvs_result,
) -> Result<Option<&'a str>, kvs_result> {
    // SAFETY: forwarded from the caller.
    match unsafe { c_str(ptr, max) } {
        Ok(s) => Ok(Some(s)),
        Err(StrError::Null) => Ok(None),
        Err(StrError::TooLong) => Err(fail(too_long, format!("{name} is longer than {max} bytes"))),
        Err(StrError::Utf8) => Err(fail(kvs_result::KVS_ERR_INVALID_UTF8, format!("{name} is not valid UTF-8"))),
    }
}

/// Writes `text` NUL-terminated into a caller buffer of `capacity` bytes and
/// its length (without the NUL) into `out_len` (if not NULL). A NULL `buf`
/// means the caller does not want it. Too small: nothing written but `out_len`.
///
/// # Safety
/// `buf` is NULL or writable for `capacity` bytes; `out_len` is NULL or writable.
pub(crate) unsafe fn write_out_str(text: &str, buf: *mut c_char, capacity: usize, out_len: *mut usize) -> kvs_result {
    if !out_len.is_null() {
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { *out_len = text.len() };
    }
    if buf.is_null() {
        return kvs_result::KVS_OK;
    }
    if capacity < text.len() + 1 {
        return fail(
            kvs_result::KVS_ERR_BUFFER_TOO_SMALL,
            format!("the buffer holds {capacity} bytes; {} are needed", text.len() + 1),
        );
    }
    // SAFETY: `buf` has room for text.len() + 1 bytes, checked above.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    kvs_result::KVS_OK
}

/// Copies the first `min(size, size_of::<T>())` bytes of `from` to `to`: how
/// the library writes a struct into caller memory sized by an older header.
///
/// # Safety
/// `to` is writable for that many bytes.
pub(crate) unsafe fn copy_prefix<T>(from: &T, to: *mut T, size: usize) {
    let len = size.min(size_of::<T>());
    // SAFETY: `from` is a complete T; `to` is writable for `len` bytes (caller).
    unsafe { std::ptr::copy_nonoverlapping((from as *const T).cast::<u8>(), to.cast::<u8>(), len) };
}
