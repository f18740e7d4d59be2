//! The committed header is exactly what cbindgen generates from the sources,
//! and the version agrees in Cargo.toml, the header macros and `kvs_version()`.

use std::ffi::CStr;
use std::path::Path;

fn committed_header() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/kvs_signaling.h"))
        .expect("include/kvs_signaling.h is committed")
}

#[test]
fn committed_header_matches_a_fresh_generation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new().with_crate(dir).with_config(config).generate().unwrap();
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).unwrap();
    assert!(
        fresh == committed_header(),
        "include/kvs_signaling.h is stale: regenerate it with `KVS_UPDATE_HEADER=1 cargo build` and commit it"
    );
}

fn macro_value(header: &str, name: &str) -> u32 {
    let line = header.lines().find(|l| l.starts_with(&format!("#define {name} "))).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn version_agrees_in_all_three_places() {
    let header = committed_header();
    let (major, minor, patch) = (
        macro_value(&header, "KVS_VERSION_MAJOR"),
        macro_value(&header, "KVS_VERSION_MINOR"),
        macro_value(&header, "KVS_VERSION_PATCH"),
    );
    let cargo: Vec<u32> = env!("CARGO_PKG_VERSION").split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(cargo, [major, minor, patch]);
    let runtime = unsafe { CStr::from_ptr(kvs_signaling::ffi::kvs_version()) }.to_str().unwrap();
    assert!(runtime.starts_with(&format!("kvs-signaling {major}.{minor}.{patch} ")), "{runtime}");
    assert!(header.contains("((KVS_VERSION_MAJOR << 16) | (KVS_VERSION_MINOR << 8) | KVS_VERSION_PATCH)"));
}
