//! Any pattern list and destination: parsing and matching never panic (nor take long: the
//! glob is meant to be linear-ish), and a parsed list printed and parsed again is the same list.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smolproxy::pattern::PatternList;

fuzz_target!(|input: (&str, &str, u16)| {
    let (list, host, port) = input;
    let _ = PatternList::parse_lenient(list).0.matches(host, port);
    if let Ok(parsed) = PatternList::parse(list) {
        assert_eq!(
            PatternList::parse(&parsed.to_string()).as_ref(),
            Ok(&parsed),
            "{list:?}"
        );
        let _ = (
            parsed.matches(host, port),
            host.parse().map(|ip| parsed.matches_ip(ip, port)),
        );
    }
});
