//! Any bytes as a chunked body through `body::relay`: never panics, Pass mode forwards a prefix
//! of the input byte for byte, and Decode accepts exactly what Pass accepts.
#![no_main]
use std::time::Duration;

use futures_lite::future::block_on;
use libfuzzer_sys::fuzz_target;
use smolproxy::body::{relay, Mode};
use smolproxy::head::Framing;
use smolproxy::reader::Reader;

fn run(data: &[u8], mode: Mode) -> Option<Vec<u8>> {
    let (mut src, mut out) = (Reader::new(data, Duration::from_secs(1)), Vec::new());
    block_on(relay(
        &mut src,
        &mut out,
        Framing::Chunked,
        mode,
        Duration::from_secs(1),
    ))
    .ok()
    .map(|_| out)
}

fuzz_target!(|data: &[u8]| {
    let (pass, decoded) = (run(data, Mode::Pass), run(data, Mode::Decode));
    assert_eq!(
        pass.is_some(),
        decoded.is_some(),
        "pass and decode disagree"
    );
    if let (Some(pass), Some(decoded)) = (pass, decoded) {
        assert!(data.starts_with(&pass), "pass mode changed the bytes");
        assert!(decoded.len() <= pass.len());
    }
    let _ = smolproxy::body::parse_chunk_size(data);
});
