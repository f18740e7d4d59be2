//! The fuzz targets of `kvs_signaling::fuzzing` under plain `cargo test`: each
//! over its seed corpus `fuzz/seeds/TARGET/` and a fixed number of
//! deterministic mutations of it, so that every CI run exercises them. The
//! same targets run under libFuzzer from `fuzz/` (`cargo fuzz run TARGET`).

use kvs_signaling::fuzzing::{TARGETS, inbound_ids_bounded};
use kvs_signaling::log::{Level, set_sink};
use kvs_signaling::protocol::{InboundMessage, MessageType};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The system allocator, noting the largest single allocation of each thread
/// and the total it requested: every allocation's size, plus the growth of
/// every reallocation.
struct Measuring;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to `System` unchanged; only notes sizes in thread-local `Cell`s.
unsafe impl GlobalAlloc for Measuring {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.with(|largest| largest.set(largest.get().max(layout.size())));
        TOTAL.with(|total| total.set(total.get() + layout.size()));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.with(|largest| largest.set(largest.get().max(new_size)));
        TOTAL.with(|total| total.set(total.get() + new_size.saturating_sub(layout.size())));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Measuring = Measuring;

/// No single allocation may be larger than this many times the input, plus
/// [`ALLOCATION_SLACK`] bytes: parsers allocate in proportion to what they read.
const ALLOCATION_FACTOR: usize = 4;
const ALLOCATION_SLACK: usize = 4 * 1024;

/// Fragments a mutation may insert: JSON syntax, odd numbers, escapes, the
/// field separator, date and query pieces, a too-long id.
const TOKENS: &[&str] = &[
    "\"",
    "\\",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "null",
    "true",
    "false",
    "-1",
    "0",
    "1e999",
    "1E5",
    "0.5",
    "-0",
    "18446744073709551616",
    "99999999999999999999",
    "\\u0000",
    "\\ud800",
    "\\u00e9",
    "é",
    "\0",
    "\n",
    " ",
    "=",
    "==",
    "&",
    "%",
    "%zz",
    "%C3%A9",
    "%00",
    "+",
    "/",
    "GMT",
    "Nov",
    "-",
    "23:59:60",
    "00:00:00",
    "9999999999999",
    "\"messageType\":\"STATUS_RESPONSE\"",
    "\"statusResponse\":{\"correlationId\":\"c\"}",
    "\"Ttl\":1e300",
    "\"Uris\":[\"turn:h\"]",
    "$ARN",
    "X-Amz-ClientId=",
    "X-Amz-ChannelARN=",
];

/// xorshift64*: a small deterministic generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target)
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(seed_dir(target))
        .unwrap_or_else(|e| panic!("seeds of {target}: {e}"))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    paths.sort();
    paths.iter().map(|path| std::fs::read(path).expect("a readable seed")).collect()
}

/// One to four random edits of a random seed, or of random bytes.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    if rng.below(16) == 0 {
        data = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
    }
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        let last = data.len().saturating_sub(1);
        match rng.below(7) {
            0 if !data.is_empty() => data[at.min(last)] ^= 1 << rng.below(8),
            1 if !data.is_empty() => data[at.min(last)] = rng.next() as u8,
            2 => {
                let end = (at + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                data.splice(at..at, token.iter().copied());
            }
            4 => {
                let end = (at + rng.below(32)).min(data.len());
                let copy = data[at..end].to_vec();
                data.splice(at..at, copy);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ => data.splice(at..at, std::iter::repeat_n(b'a', 300)).for_each(drop),
        }
    }
    data
}

/// Runs `target` over `inputs`, naming the failing input; also fails when one
/// allocation is out of proportion to the input.
fn run_all(name: &str, target: fn(&[u8]), inputs: impl IntoIterator<Item = Vec<u8>>) {
    for input in inputs {
        LARGEST.with(|largest| largest.set(0));
        let result = catch_unwind(AssertUnwindSafe(|| {
            target(&input);
            let largest = LARGEST.with(Cell::get);
            let bound = input.len() * ALLOCATION_FACTOR + ALLOCATION_SLACK;
            assert!(largest <= bound, "an allocation of {largest} bytes for {} bytes of input", input.len());
        }));
        if let Err(panic) = result {
            eprintln!("{name} failed on {:?}", String::from_utf8_lossy(&input));
            resume_unwind(panic);
        }
    }
}

/// The seeds of `name`, then `mutations` mutations of them. Log lines are
/// dropped unformatted: the parsers log what they skip, and that is not theirs
/// to allocate.
fn fuzz(name: &str, mutations: usize) {
    set_sink(Level::Error, Some(Arc::new(|_, _, _| {})));
    let (_, target) = TARGETS.iter().find(|(n, _)| *n == name).expect("a known target");
    let seeds = seeds(name);
    assert!(!seeds.is_empty(), "{name} has no seeds");
    run_all(name, *target, seeds.clone());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    run_all(name, *target, (0..mutations).map(|_| mutate(&mut rng, &seeds)));
}

#[test]
fn every_target_has_seeds_and_a_libfuzzer_harness() {
    let harnesses = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for (name, _) in TARGETS {
        assert!(seed_dir(name).is_dir(), "no fuzz/seeds/{name}");
        let harness = std::fs::read_to_string(harnesses.join(format!("{name}.rs"))).expect("a harness");
        assert!(harness.contains(&format!("fuzzing::{name}(")), "fuzz/fuzz_targets/{name}.rs calls another target");
    }
}

#[test]
fn inbound_frame() {
    fuzz("inbound_frame", 40_000);
}

#[test]
fn payload() {
    fuzz("payload", 40_000);
}

#[test]
fn outbound_frame() {
    fuzz("outbound_frame", 40_000);
}

#[test]
fn control_plane_reply() {
    fuzz("control_plane_reply", 40_000);
}

#[test]
fn service_error() {
    fuzz("service_error", 40_000);
}

#[test]
fn http_date() {
    fuzz("http_date", 40_000);
}

#[test]
fn endpoint_cache() {
    fuzz("endpoint_cache", 40_000);
}

#[cfg(feature = "emulator")]
#[test]
fn emulator_request() {
    fuzz("emulator_request", 20_000);
}

#[cfg(feature = "emulator")]
#[test]
fn emulator_signature() {
    fuzz("emulator_signature", 2_000);
}

/// `InboundMessage::parse` never yields a `senderClientId` or `correlationId`
/// beyond the 256 characters of spec §4.1.
#[test]
fn inbound_ids_are_bounded() {
    let long = format!(r#"{{"messageType":"SDP_OFFER","senderClientId":"{}"}}"#, "a".repeat(257));
    run_all("inbound_ids_bounded", inbound_ids_bounded, [long.into_bytes()]);
    let seeds = seeds("inbound_frame");
    let mut rng = Rng(7);
    run_all("inbound_ids_bounded", inbound_ids_bounded, (0..40_000).map(|_| mutate(&mut rng, &seeds)));
}

/// A 64 KiB frame of `junk(0)`, `junk(1)`... in an unknown key of an
/// ICE_CANDIDATE message, closed by `close`.
fn junk_frame(open: &str, junk: impl Fn(usize) -> String, close: &str) -> String {
    let mut frame = format!(r#"{{"messageType":"ICE_CANDIDATE","senderClientId":"v","x":{open}"#);
    for i in 0.. {
        let next = junk(i);
        if frame.len() + next.len() + close.len() + 1 >= 64 * 1024 {
            break;
        }
        frame.push_str(&next);
    }
    frame.push_str(close);
    frame.push('}');
    frame
}

/// `InboundMessage::parse` allocates in proportion to what it keeps, not to
/// what it reads: a 64 KiB frame whose bulk is an unknown key of any JSON
/// type costs less than twice its size in total allocations.
#[test]
fn inbound_parse_allocates_in_proportion_to_what_it_keeps() {
    let frames = [
        ("array of numbers", junk_frame("[0", |_| ",0".into(), "]")),
        ("array of strings", junk_frame(r#"["a""#, |_| r#","a""#.into(), "]")),
        ("object", junk_frame(r#"{"k":0"#, |i| format!(r#","{i:x}":null"#), "}")),
        ("nested arrays", junk_frame("[[]", |_| ",[[[[[[[[[[]]]]]]]]]]".into(), "]")),
        ("escaped string", junk_frame(r#"""#, |_| r"\n".into(), r#"""#)),
        ("bools", junk_frame("[true", |_| ",false".into(), "]")),
    ];
    let mut over = Vec::new();
    for (name, frame) in &frames {
        TOTAL.with(|total| total.set(0));
        let message = InboundMessage::parse(frame).expect("a valid frame");
        let total = TOTAL.with(Cell::get);
        drop(message);
        eprintln!("{name}: {total} bytes allocated parsing a {} byte frame", frame.len());
        if total >= 2 * frame.len() {
            over.push(format!("{name}: {total} bytes allocated for {} bytes", frame.len()));
        }
    }
    assert!(over.is_empty(), "{over:#?}");
    let parsed = InboundMessage::parse(&frames[0].1).expect("a valid frame");
    assert_eq!(parsed.message_type, MessageType::IceCandidate);
    assert_eq!(parsed.sender_client_id.as_deref(), Some("v"));
}
