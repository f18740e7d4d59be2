#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kvs_signaling::fuzzing::emulator_request(data));
