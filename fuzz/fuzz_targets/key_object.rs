#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wqm::hostile::key_object(data));
