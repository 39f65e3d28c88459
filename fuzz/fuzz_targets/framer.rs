#![no_main]
//! The fuzzer's bytes to `complyd::fuzz::framer` (src/fuzz.rs), which says
//! what it feeds the library and which invariants it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| complyd::fuzz::framer(data));
