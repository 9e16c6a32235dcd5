#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wqm::hostile::pack_index(data));
