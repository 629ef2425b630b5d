//! Any bytes as a response head (first byte: response to HEAD or not): never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flag, head)) = data.split_first() else {
        return;
    };
    if let Ok(res) = smolproxy::head::parse_response(head, flag & 1 == 1) {
        let _ = (
            res.keep_alive(),
            res.head.fields().count(),
            res.head.tokens("connection"),
        );
    }
});
