#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| redis_autoscaler::fuzzing::config(data));
