//! The interception CA (SPEC §10): `smolproxy ca new` makes one, [`Ca::load`] checks the one
//! `--intercept-ca`/`--intercept-key` name at start, and [`Ca::issue`] signs the leaf
//! certificates that interception shows clients.
//!
//! The CA is an ECDSA P-256 root that may sign end-entity certificates only: basicConstraints
//! CA with pathlen 0 (critical), keyUsage keyCertSign and cRLSign (critical), a subject key
//! identifier, a random 16-byte serial, valid from a day back (clocks on phones and routers
//! drift) for `--days`. The key is written first, with mode 0600, and neither file is ever
//! overwritten: a CA that clients already trust must not be replaced by accident. What it
//! prints is, for each kind of client, the one step that makes it trust the certificate.
//!
//! Loading refuses, with one line each: a key readable by group or others (like ssh), a
//! certificate that is not a CA or may not sign certificates, one that is expired or not yet
//! valid, and a key that is not the certificate's. A leaf is valid from a day back for at most
//! 397 days (the CA/Browser Forum's limit, which Apple and Chromium enforce) and never past
//! the CA; its issuer is the CA's subject byte for byte, which is checked at start by issuing
//! one (rcgen writes names itself, and clients match issuers by their bytes).
//!
//! X.509 is rcgen's (over ring, which rustls already brings); this file only chooses the
//! fields, and `ca/der.rs` reads the few a check needs. Built with the `tls-server` feature;
//! without it `ca new` and the interception flags say the build lacks it.

use std::path::{Path, PathBuf};

pub mod der;
#[cfg(feature = "tls-server")]
use der::certificate;

/// Longest `--days`: a root that outlives the deployment it was made for is a liability, and
/// 20 years is already far beyond any machine this runs on.
pub const MAX_DAYS: u32 = 20 * 365;
/// `--days` when not given: ten years, as mkcert does, so a router's CA is made once.
pub const DEFAULT_DAYS: u32 = 10 * 365;

/// What `smolproxy ca new` makes: where to write the certificate and the key, the CA's common
/// name (a default naming this host when `None`) and how many days it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCa {
    /// The certificate file to write.
    pub cert: PathBuf,
    /// The private key file to write (mode 0600).
    pub key: PathBuf,
    /// The common name, or the default.
    pub name: Option<String>,
    /// Days of validity.
    pub days: u32,
}

/// Makes the CA that `args` describes and returns what to print: the files written and how
/// each client comes to trust the certificate. Errors are one line for the user.
#[cfg(feature = "tls-server")]
pub fn create(args: &NewCa) -> Result<String, String> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
        KeyUsagePurpose, SerialNumber,
    };

    if args.cert == args.key {
        return Err("ca new: --cert and --key name the same file".into());
    }
    for (flag, path) in [("--cert", &args.cert), ("--key", &args.key)] {
        if path.symlink_metadata().is_ok() {
            return Err(format!(
                "ca new: {flag} {} exists; it is never overwritten (remove it first if you mean to replace the CA)",
                path.display()
            ));
        }
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("ca new: cannot make a key: {e}"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "smolproxy");
    dn.push(
        DnType::CommonName,
        args.name.clone().unwrap_or_else(default_name),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(SerialNumber::from_slice(
        &random_serial().map_err(|e| format!("ca new: {e}"))?,
    ));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(i64::from(args.days));
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("ca new: cannot sign the certificate: {e}"))?;

    write_new(&args.key, key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| format!("ca new: cannot write --key {}: {e}", args.key.display()))?;
    if let Err(e) = write_new(&args.cert, cert.pem().as_bytes(), 0o644) {
        // Leave nothing half made: a key without its certificate is of no use to anyone.
        let _ = std::fs::remove_file(&args.key);
        return Err(format!(
            "ca new: cannot write --cert {}: {e}",
            args.cert.display()
        ));
    }
    Ok(instructions(&args.cert, &args.key, args.days))
}

/// Longest a leaf is valid: the CA/Browser Forum's 397 days, which Apple and Chromium enforce
/// even for private roots' leaves.
#[cfg(feature = "tls-server")]
const LEAF_DAYS: i64 = 397;
/// Largest CA certificate or key file read; a CA is a few KB, 1 MiB means a wrong file.
#[cfg(feature = "tls-server")]
const MAX_CA_FILE: u64 = 1024 * 1024;

/// A loaded, checked interception CA and the one key every leaf it issues is for.
#[cfg(feature = "tls-server")]
pub struct Ca {
    /// The CA's name, key identifier and signing key, as rcgen signs with them.
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The end of the CA's validity (Unix seconds): no leaf outlives it.
    not_after: i64,
    /// The key of every leaf: one per process is enough, since the leaves are only ever shown
    /// to clients of this proxy, and it saves a key generation per name.
    leaf_key: rcgen::KeyPair,
}

#[cfg(feature = "tls-server")]
impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

#[cfg(feature = "tls-server")]
impl Ca {
    /// Reads and checks the CA at `cert` and its key at `key`. The error is the exit status
    /// (1: a file cannot be read, 2: what it holds is refused) and one line for the user.
    pub fn load(cert: &Path, key: &Path) -> Result<Ca, (u8, String)> {
        let (cert_name, key_name) = (cert.display(), key.display());
        let refuse = |why: String| (2u8, why);
        crate::file::private("--intercept-key", key)?;
        let read = |flag: &str, path: &Path| {
            crate::file::read_limited(path, MAX_CA_FILE)
                .map_err(|e| (1, format!("cannot read {flag} {}: {e}", path.display())))
        };
        let cert_pem = read("--intercept-ca", cert)?;
        let key_pem = read("--intercept-key", key)?;
        let bad_cert = |why: &str| refuse(format!("--intercept-ca {cert_name}: {why}"));
        let der =
            first_certificate(&cert_pem).ok_or_else(|| bad_cert("no PEM certificate in it"))?;
        let info = certificate(&der).map_err(|e| bad_cert(&format!("not a certificate ({e})")))?;
        if !info.is_ca {
            return Err(bad_cert(
                "not a CA certificate (basicConstraints CA is not set)",
            ));
        }
        if info.cert_sign == Some(false) {
            return Err(bad_cert(
                "its key usage does not allow signing certificates",
            ));
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if info.not_after <= now {
            return Err(bad_cert("expired"));
        }
        if info.not_before > now {
            return Err(bad_cert("not valid yet (check the clock)"));
        }
        let text = std::str::from_utf8(&key_pem).unwrap_or_default();
        let ca_key = rcgen::KeyPair::from_pem(text).map_err(|_| {
            refuse(format!(
                "--intercept-key {key_name}: not an unencrypted PKCS#8 private key (ECDSA, \
                 Ed25519 or RSA) in PEM"
            ))
        })?;
        use rcgen::PublicKeyData;
        if ca_key.subject_public_key_info() != info.spki {
            return Err(refuse(format!(
                "--intercept-key {key_name} is not the key of --intercept-ca {cert_name}"
            )));
        }
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = distinguished_name(info.subject)
            .map_err(|e| bad_cert(&format!("its subject cannot be used: {e}")))?;
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        if let Some(id) = info.key_id {
            params.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(id.to_vec());
        }
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| refuse(format!("cannot make the leaf key: {e}")))?;
        let ca = Ca {
            issuer: rcgen::Issuer::new(params, ca_key),
            not_after: info.not_after,
            leaf_key,
        };
        // Clients find a leaf's issuer by comparing bytes: the name rcgen writes must be the
        // CA's subject exactly, which only signing one shows.
        let probe = ca
            .issue("smolproxy.invalid")
            .map_err(|e| bad_cert(&format!("cannot sign with it: {e}")))?;
        match certificate(&probe) {
            Ok(leaf) if leaf.issuer == info.subject => Ok(ca),
            _ => Err(bad_cert(
                "its subject uses an encoding smolproxy cannot reproduce; make one with \
                 `smolproxy ca new`",
            )),
        }
    }

    /// A leaf certificate (DER) for `name`, a host name or an IP address, for the key
    /// [`Ca::leaf_key_der`] returns.
    pub fn issue(&self, name: &str) -> Result<Vec<u8>, String> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose};
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match name.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(
                name.try_into()
                    .map_err(|_| format!("'{name}' cannot be a certificate name"))?,
            ),
        }];
        params.distinguished_name = rcgen::DistinguishedName::new();
        // RFC 5280's upper bound for a common name; the SAN is what clients check anyway.
        if name.len() <= 64 {
            params.distinguished_name.push(DnType::CommonName, name);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        let end = (now + time::Duration::days(LEAF_DAYS)).unix_timestamp();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(end.min(self.not_after))
            .map_err(|e| e.to_string())?;
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| e.to_string())?;
        Ok(cert.der().to_vec())
    }

    /// The leaves' private key, PKCS#8 DER.
    pub fn leaf_key_der(&self) -> Vec<u8> {
        self.leaf_key.serialize_der()
    }
}

/// The first certificate of a PEM file, DER.
#[cfg(feature = "tls-server")]
fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

/// The CA's subject as rcgen's name: the same attributes, in order, with the same string
/// types, so that rcgen writes the same bytes (checked in [`Ca::load`]).
#[cfg(feature = "tls-server")]
fn distinguished_name(subject: &[u8]) -> Result<rcgen::DistinguishedName, &'static str> {
    use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
    use rcgen::{DistinguishedName, DnType, DnValue};
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| "bad string")
    };
    let mut dn = DistinguishedName::new();
    for (oid, tag, bytes) in der::name_attributes(subject)? {
        let value = match tag {
            0x0c => DnValue::Utf8String(text(bytes)?),
            0x13 => DnValue::PrintableString(
                PrintableString::try_from(text(bytes)?).map_err(|_| "bad string")?,
            ),
            0x16 => {
                DnValue::Ia5String(Ia5String::try_from(text(bytes)?).map_err(|_| "bad string")?)
            }
            0x14 => DnValue::TeletexString(
                TeletexString::try_from(text(bytes)?).map_err(|_| "bad string")?,
            ),
            0x1e => DnValue::BmpString(
                BmpString::from_utf16be(bytes.to_vec()).map_err(|_| "bad string")?,
            ),
            0x1c => DnValue::UniversalString(
                UniversalString::from_utf32be(bytes.to_vec()).map_err(|_| "bad string")?,
            ),
            _ => return Err("a name attribute of an unknown string type"),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// Without the `tls-server` feature there is no CA: the flags that would load one are refused.
#[cfg(not(feature = "tls-server"))]
#[derive(Debug)]
pub enum Ca {}

#[cfg(not(feature = "tls-server"))]
impl Ca {
    /// Never reached: `--intercept` is refused before files are read.
    pub fn load(_: &Path, _: &Path) -> Result<Ca, (u8, String)> {
        Err((
            2,
            "this build has no TLS server (the tls-server feature is off)".into(),
        ))
    }
}

/// Without the `tls-server` feature there is no certificate code in the binary.
#[cfg(not(feature = "tls-server"))]
pub fn create(_: &NewCa) -> Result<String, String> {
    Err("ca new: this build has no certificate code (the tls-server feature is off)".into())
}

/// The CA's name when `--name` is not given: the host's name tells one deployment's CA from
/// another in a trust store that holds several.
#[cfg(feature = "tls-server")]
fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match host.trim() {
        "" => "smolproxy interception CA".into(),
        host => format!("smolproxy interception CA ({host})"),
    }
}

/// 16 random bytes, the top bit clear so the DER integer stays positive (RFC 5280 §4.1.2.2:
/// at most 20 octets, positive).
#[cfg(feature = "tls-server")]
fn random_serial() -> Result<[u8; 16], String> {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| "no random numbers from the system".to_string())?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01; // never a leading zero octet, so the serial is always 16 bytes long
    Ok(serial)
}

/// Writes a file that must not exist yet, created with `mode` (so a key is never readable by
/// others, not even for a moment).
#[cfg(feature = "tls-server")]
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let describe = |e: std::io::Error| crate::error::describe(&e);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(describe)?;
    file.write_all(data).map_err(describe)?;
    file.sync_all().map_err(describe)
}

/// What `ca new` prints: where the files are, and how each client trusts the certificate.
pub fn instructions(cert: &Path, key: &Path, days: u32) -> String {
    // Absolute paths, so every line below can be pasted from any directory.
    let abs = |p: &Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let (cert, key) = (abs(cert), abs(key));
    format!(
        "made an interception CA, valid for {days} days:\n\
         \x20 certificate  {cert}  (give this to clients)\n\
         \x20 key          {key}  (mode 0600: whoever holds it can impersonate any site to every\n\
         \x20              client that trusts the certificate; keep it on this machine only)\n\
         \n\
         trust the certificate, one line per kind of client:\n\
         \x20 curl               curl --cacert {cert} -x http://127.0.0.1:3128 https://HOST/\n\
         \x20 Node.js            NODE_EXTRA_CA_CERTS={cert} node app.js\n\
         \x20 newman             newman run COLLECTION --ssl-extra-ca-certs {cert}\n\
         \x20 Debian, Ubuntu     cp {cert} /usr/local/share/ca-certificates/smolproxy.crt && update-ca-certificates\n\
         \x20 Chromium (Linux)   certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n smolproxy -i {cert}\n\
         \x20 Firefox            certutil -d sql:PROFILE_DIR -A -t C,, -n smolproxy -i {cert}\n\
         \x20                    (or Settings > Privacy & Security > Certificates > Import)\n\
         \x20 Android            copy the certificate to the phone, then Settings > Security >\n\
         \x20                    Encryption & credentials > Install a certificate > CA certificate\n\
         \x20 iOS, iPadOS        open the certificate on the device, install the profile, then\n\
         \x20                    Settings > General > About > Certificate Trust Settings: full trust\n\
         (certutil is in Debian's libnss3-tools; apps that pin their certificates trust none of these)\n"
    )
}
