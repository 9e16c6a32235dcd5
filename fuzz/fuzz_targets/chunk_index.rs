#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wqm::hostile::chunk_index(data));
