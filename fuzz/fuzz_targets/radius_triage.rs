#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| smsotp_fuzz::radius_triage(data));
