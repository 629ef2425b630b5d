//! Any bytes as what a load balancer sends first: the PROXY protocol parser never panics, never
//! claims more bytes than it was given or than the longest header, and a header it accepts
//! parses the same with the client's bytes appended, while every shorter prefix is incomplete.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smolproxy::proxy_protocol::{parse, MAX};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(header)) = parse(data) else {
        return;
    };
    assert!(header.len <= data.len() && header.len <= MAX);
    let mut more = data[..header.len].to_vec();
    more.extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert_eq!(parse(&more), Ok(Some(header)));
    for n in 0..header.len {
        assert_eq!(parse(&data[..n]), Ok(None), "prefix of {n} bytes");
    }
});
