//! Generates the C header with cbindgen into `$OUT_DIR/include/kvs_signaling.h`.
//!
//! The committed copy in `include/` is only rewritten when the environment asks
//! for it (`KVS_UPDATE_HEADER=1`); the test command compares the two and fails on
//! any difference. A cbindgen failure is a warning, so that rustc reports the real
//! error in the source.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KVS_UPDATE_HEADER");

    // Unloading a Rust cdylib is unsafe (TLS destructors, live runtime threads).
    // The SONAME carries the major version (libkvs_signaling.so.0 for every
    // 0.x.y): binaries record it, so an in-place upgrade within a major version
    // is picked up and a new major version can be installed next to the old one.
    // Cargo writes only libkvs_signaling.so; scripts/install.sh installs
    // libkvs_signaling.so.X.Y.Z with the .so.X and .so symlinks, and the
    // Makefiles link .so.X to .so in the build tree for their rpath.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libkvs_signaling.so.{major}");
    }

    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("include");
    let config = match cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")) {
        Ok(config) => config,
        Err(err) => {
            println!("cargo:warning=cbindgen.toml: {err}");
            return;
        }
    };
    let bindings = match cbindgen::Builder::new().with_crate(&crate_dir).with_config(config).generate() {
        Ok(bindings) => bindings,
        Err(err) => {
            println!("cargo:warning=cbindgen could not generate the header: {err}");
            return;
        }
    };
    if let Err(err) = fs::create_dir_all(&out_dir) {
        println!("cargo:warning=cannot create {}: {err}", out_dir.display());
        return;
    }
    bindings.write_to_file(out_dir.join("kvs_signaling.h"));
    println!("cargo:include={}", out_dir.display());
    if env::var("KVS_UPDATE_HEADER").as_deref() == Ok("1") {
        bindings.write_to_file(crate_dir.join("include").join("kvs_signaling.h"));
    }
}
