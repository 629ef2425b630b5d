//! Just enough DER (X.690) to check the interception CA given at start: its subject, validity,
//! public key and the three extensions that say whether it may sign certificates.
//!
//! A reader, not a validator of whole certificates: it walks the fields of RFC 5280 §4.1 in
//! order and keeps the byte ranges of the few it needs. Every length is checked against what
//! is left, so no input makes it read out of bounds or panic (fuzzed: `fuzz/fuzz_targets/
//! ca_cert.rs`). Multi-byte tags and indefinite lengths, which DER never uses in a
//! certificate, are errors.

/// One element: its tag, its contents, and the whole element as encoded.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    /// The identifier octet.
    pub tag: u8,
    /// The contents octets.
    pub body: &'a [u8],
    /// Identifier, length and contents together.
    pub raw: &'a [u8],
}

/// Tags used here.
pub const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// Reads the element at the start of `input` and advances past it.
pub fn read<'a>(input: &mut &'a [u8]) -> Result<Tlv<'a>, &'static str> {
    let data = *input;
    let (&tag, rest) = data.split_first().ok_or("truncated")?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte tag");
    }
    let (&first, mut rest) = rest.split_first().ok_or("truncated")?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad length");
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err("truncated");
    }
    let header = data.len() - rest.len();
    let tlv = Tlv {
        tag,
        body: &rest[..len],
        raw: &data[..header + len],
    };
    *input = &rest[len..];
    Ok(tlv)
}

/// Reads an element that must have `tag`.
fn expect<'a>(input: &mut &'a [u8], tag: u8, what: &'static str) -> Result<Tlv<'a>, &'static str> {
    let tlv = read(input)?;
    if tlv.tag == tag {
        Ok(tlv)
    } else {
        Err(what)
    }
}

/// What the CA check needs from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo<'a> {
    /// The subject Name, as encoded: a leaf's issuer must be these very bytes.
    pub subject: &'a [u8],
    /// The issuer Name, as encoded.
    pub issuer: &'a [u8],
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    /// Validity, in seconds since the Unix epoch.
    pub not_after: i64,
    /// SubjectPublicKeyInfo, as encoded.
    pub spki: &'a [u8],
    /// basicConstraints cA.
    pub is_ca: bool,
    /// keyUsage allows keyCertSign; `None` when the extension is absent (any use allowed).
    pub cert_sign: Option<bool>,
    /// The subject key identifier, if the certificate has one.
    pub key_id: Option<&'a [u8]>,
}

/// Reads the fields of a DER certificate (RFC 5280 §4.1) that [`CertInfo`] holds.
pub fn certificate(der: &[u8]) -> Result<CertInfo<'_>, &'static str> {
    let mut input = der;
    let cert = expect(&mut input, SEQUENCE, "not a certificate")?;
    let mut cert_body = cert.body;
    let tbs = expect(&mut cert_body, SEQUENCE, "not a certificate")?;
    let mut t = tbs.body;
    let mut next = read(&mut t)?;
    if next.tag == 0xa0 {
        next = read(&mut t)?; // version, then the serial
    }
    if next.tag != INTEGER {
        return Err("no serial number");
    }
    expect(&mut t, SEQUENCE, "no signature algorithm")?;
    let issuer = expect(&mut t, SEQUENCE, "no issuer")?;
    let validity = expect(&mut t, SEQUENCE, "no validity")?;
    let subject = expect(&mut t, SEQUENCE, "no subject")?;
    let spki = expect(&mut t, SEQUENCE, "no public key")?;
    let mut v = validity.body;
    let not_before = time(read(&mut v)?)?;
    let not_after = time(read(&mut v)?)?;
    let mut info = CertInfo {
        subject: subject.raw,
        issuer: issuer.raw,
        not_before,
        not_after,
        spki: spki.raw,
        is_ca: false,
        cert_sign: None,
        key_id: None,
    };
    while !t.is_empty() {
        let field = read(&mut t)?;
        if field.tag != 0xa3 {
            continue; // issuerUniqueID, subjectUniqueID
        }
        let mut outer = field.body;
        let list = expect(&mut outer, SEQUENCE, "bad extensions")?;
        let mut exts = list.body;
        while !exts.is_empty() {
            let ext = expect(&mut exts, SEQUENCE, "bad extension")?;
            let mut e = ext.body;
            let oid = expect(&mut e, OID, "bad extension")?;
            let mut value = read(&mut e)?;
            if value.tag == BOOLEAN {
                value = read(&mut e)?; // critical
            }
            if value.tag != OCTET_STRING {
                return Err("bad extension");
            }
            extension(&mut info, oid.body, value.body)?;
        }
    }
    Ok(info)
}

/// Notes what one extension says; others are skipped.
fn extension<'a>(info: &mut CertInfo<'a>, oid: &[u8], value: &'a [u8]) -> Result<(), &'static str> {
    let mut v = value;
    match oid {
        // 2.5.29.19 basicConstraints: SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLen INTEGER OPT }
        [0x55, 0x1d, 0x13] => {
            let mut seq = expect(&mut v, SEQUENCE, "bad basicConstraints")?.body;
            if let Some(&BOOLEAN) = seq.first() {
                let ca = read(&mut seq)?;
                info.is_ca = ca.body.first().is_some_and(|&b| b != 0);
            }
        }
        // 2.5.29.15 keyUsage: BIT STRING; keyCertSign is bit 5 (0x04 of the first octet).
        [0x55, 0x1d, 0x0f] => {
            let bits = expect(&mut v, BIT_STRING, "bad keyUsage")?.body;
            info.cert_sign = Some(bits.get(1).is_some_and(|b| b & 0x04 != 0));
        }
        // 2.5.29.14 subjectKeyIdentifier: OCTET STRING.
        [0x55, 0x1d, 0x0e] => {
            info.key_id = Some(expect(&mut v, OCTET_STRING, "bad subjectKeyIdentifier")?.body);
        }
        _ => {}
    }
    Ok(())
}

/// A UTCTime or GeneralizedTime in the `...Z` form DER requires, as Unix seconds.
fn time(tlv: Tlv<'_>) -> Result<i64, &'static str> {
    let s = tlv.body;
    let (year, rest) = match (tlv.tag, s.len()) {
        // RFC 5280 §4.1.2.5.1: YY >= 50 is 19YY, else 20YY.
        (UTC_TIME, 13) => {
            let yy = digits(&s[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&s[..4])?, &s[4..]),
        _ => return Err("bad time"),
    };
    if rest.last() != Some(&b'Z') {
        return Err("bad time");
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err("bad time");
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// A run of ASCII digits as a number.
fn digits(s: &[u8]) -> Result<i64, &'static str> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err("bad time");
    }
    Ok(s.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One attribute of a Name: its type's OID arcs, its string's tag and the string's bytes.
pub type Attribute<'a> = (Vec<u64>, u8, &'a [u8]);

/// The attributes of a Name, in order. A relative name with several attributes (a
/// multi-valued RDN) is refused: rcgen cannot write one.
pub fn name_attributes(name: &[u8]) -> Result<Vec<Attribute<'_>>, &'static str> {
    let mut input = name;
    let seq = expect(&mut input, SEQUENCE, "bad name")?;
    let mut rdns = seq.body;
    let mut out = Vec::new();
    while !rdns.is_empty() {
        let set = expect(&mut rdns, SET, "bad name")?;
        let mut s = set.body;
        let atv = expect(&mut s, SEQUENCE, "bad name")?;
        if !s.is_empty() {
            return Err("a multi-valued name");
        }
        let mut a = atv.body;
        let oid = expect(&mut a, OID, "bad name")?;
        let value = read(&mut a)?;
        out.push((arcs(oid.body)?, value.tag, value.body));
    }
    Ok(out)
}

/// The arcs of an encoded OID (X.690 §8.19).
fn arcs(body: &[u8]) -> Result<Vec<u64>, &'static str> {
    let mut out = Vec::new();
    let mut n: u64 = 0;
    for (i, &b) in body.iter().enumerate() {
        if n > u64::MAX >> 7 {
            return Err("bad OID");
        }
        n = (n << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if out.is_empty() {
                let first = n.min(80) / 40;
                out.push(first);
                out.push(n - first * 40);
            } else {
                out.push(n);
            }
            n = 0;
        } else if i + 1 == body.len() {
            return Err("bad OID");
        }
    }
    if out.is_empty() {
        return Err("bad OID");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_truncation() {
        let mut ok: &[u8] = &[0x04, 0x02, 0xaa, 0xbb, 0xff];
        let t = read(&mut ok).unwrap();
        assert_eq!((t.tag, t.body, ok), (0x04, &[0xaa, 0xbb][..], &[0xff][..]));
        let mut long: &[u8] = &[0x04, 0x81, 0x01, 0x07];
        assert_eq!(read(&mut long).unwrap().body, [0x07]);
        for bad in [
            &[][..],
            &[0x04],
            &[0x04, 0x03, 0x00],
            &[0x04, 0x80],
            &[0x04, 0x85, 1, 1, 1, 1, 1],
            &[0x1f, 0x01, 0x00],
            &[0x04, 0x84, 0xff, 0xff, 0xff, 0xff],
        ] {
            let mut input = bad;
            assert!(read(&mut input).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times() {
        let t = |tag, s: &str| {
            time(Tlv {
                tag,
                body: s.as_bytes(),
                raw: &[],
            })
        };
        assert_eq!(t(UTC_TIME, "700101000000Z"), Ok(0));
        assert_eq!(t(UTC_TIME, "491231235959Z"), Ok(2_524_607_999));
        assert_eq!(t(GENERALIZED_TIME, "20261206040221Z"), Ok(1_796_529_741));
        for bad in [
            "7001010000Z",
            "701301000000Z",
            "70010100000Z0",
            "7001010000001",
        ] {
            assert!(t(UTC_TIME, bad).is_err(), "{bad}");
        }
        assert!(t(OCTET_STRING, "700101000000Z").is_err());
    }

    #[test]
    fn oids() {
        assert_eq!(arcs(&[0x55, 0x04, 0x03]), Ok(vec![2, 5, 4, 3]));
        assert_eq!(
            arcs(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            Ok(vec![1, 2, 840, 113_549])
        );
        assert!(arcs(&[0x55, 0x86]).is_err());
        assert!(arcs(&[]).is_err());
    }
}
