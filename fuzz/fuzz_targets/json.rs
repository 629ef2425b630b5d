//! Any bytes as JSON text (made UTF-8 lossily: the parser takes `&str`): parsing never panics,
//! and a parsed value written compact or pretty parses back to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smolproxy::json::Json;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = Json::parse(&String::from_utf8_lossy(data)) {
        assert_eq!(Json::parse(&v.text()).as_ref(), Ok(&v), "{}", v.text());
        assert_eq!(Json::parse(&v.pretty()).as_ref(), Ok(&v), "{}", v.pretty());
    }
});
