//! Any string as an absolute-form or authority-form target: never panics, and a parsed target
//! printed and parsed again is the same target.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smolproxy::target::Target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Target::parse_absolute(s) {
        assert_eq!(
            Target::parse_absolute(&t.to_string()),
            Ok(t.clone()),
            "{s:?}"
        );
    }
    if let Ok(t) = Target::parse_authority(s) {
        assert_eq!(Target::parse_authority(&t.to_string()), Ok(t), "{s:?}");
    }
    let _ = smolproxy::target::parse_authority(s, Some(80));
});
