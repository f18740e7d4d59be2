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

/// Every name the header defines (macros, types, functions) is `kvs_`/`KVS_`
/// prefixed, so none can clash with the firmware's own names.
#[test]
fn every_name_in_the_header_is_prefixed() {
    let header = committed_header();
    let word_before = |text: &str, end: usize| {
        let start = text[..end].rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        text[start..end].to_owned()
    };
    let mut names = Vec::new();
    for line in header.lines() {
        if let Some(rest) = line.strip_prefix("#define ") {
            names.push(rest.split_whitespace().next().unwrap_or_default().to_owned());
        } else if let Some(rest) = line.strip_prefix("} ").map(str::trim_start).filter(|rest| !rest.starts_with("//")) {
            names.push(rest.trim_end_matches(';').trim().to_owned());
        } else if line.starts_with(|c: char| c.is_ascii_alphabetic()) {
            if let Some(open) = line.find("(*") {
                let close = line[open..].find(')').map_or(line.len(), |i| open + i);
                names.push(word_before(line, close));
            } else if let Some(open) = line.find('(') {
                names.push(word_before(line, open));
            } else if line.starts_with("typedef ") {
                names.push(word_before(line, line.trim_end_matches(';').len()));
            } else if line.starts_with("struct ") || line.starts_with("enum ") {
                names.push(line.split_whitespace().nth(1).unwrap_or_default().to_owned());
            }
        }
    }
    assert!(names.len() > 80, "the scan found only {} names", names.len());
    names.retain(|name| !name.is_empty());
    let foreign: Vec<&String> =
        names.iter().filter(|name| !(name.starts_with("kvs_") || name.starts_with("KVS_"))).collect();
    assert!(foreign.is_empty(), "names without the kvs_/KVS_ prefix in the header: {foreign:?}");
}
