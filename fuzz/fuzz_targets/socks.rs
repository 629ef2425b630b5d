//! Any bytes as what a SOCKS client sends the proxy: no parser panics, none claims more bytes
//! than it was given, and a message it accepts parses the same with bytes appended.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smolproxy::socks::message as m;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((methods, n))) = m::greeting(data) {
        assert!(n <= data.len() && methods.len() + 2 == n);
    }
    if let Ok(Some((_, _, n))) = m::credentials(data) {
        assert!(n <= data.len());
    }
    for parse in [m::request5, m::request4] {
        if let Ok(Some((req, n))) = parse(data) {
            assert!(n <= data.len());
            let mut more = data[..n].to_vec();
            more.extend_from_slice(b"\x00tail");
            assert_eq!(parse(&more), Ok(Some((req, n))));
        }
    }
    let _ = m::udp_request(data);
});
