//! Any bytes as the DER of an interception CA certificate: never panics, and every range the
//! reader hands out lies inside the input (a Name it returns parses as one again).
#![no_main]
use libfuzzer_sys::fuzz_target;
use smolproxy::ca::der;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = der::certificate(data) {
        let _ = der::name_attributes(info.subject);
        let _ = der::name_attributes(info.issuer);
        assert!(info.spki.len() <= data.len());
    }
    let _ = der::name_attributes(data);
});
