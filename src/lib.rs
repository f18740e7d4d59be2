//! kvs-signaling: a client for the Amazon Kinesis Video Streams WebRTC
//! signaling service, with a C ABI (`include/kvs_signaling.h`), a safe async
//! Rust API ([`client`]) and a local emulator of the service ([`emulator`]).

#![warn(missing_docs)]

pub mod protocol;

#[cfg(feature = "emulator")]
pub mod emulator;

pub mod aws;
pub mod client;
// The C ABI, documented in the generated header (include/kvs_signaling.h):
// doc comments here become header text, so the lint is off for it.
#[allow(missing_docs)]
pub mod ffi;
#[doc(hidden)]
pub mod fuzzing;
pub mod log;
pub mod runtime;
mod tcp;
