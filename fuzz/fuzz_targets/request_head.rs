//! Any bytes as a request head: parsing never panics, and what parses answers every question.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = smolproxy::head::parse_request(data) {
        let _ = (
            req.keep_alive(),
            req.is_upgrade(),
            req.expects_continue(),
            req.passed_through("smolproxy"),
        );
        let _ = (
            req.head.fields().count(),
            req.target.to_string(),
            req.target.host_header(),
        );
    }
});
