//! The interception CA (SPEC §10): `smolproxy ca new` makes one.
//!
//! The CA is an ECDSA P-256 root that may sign end-entity certificates only: basicConstraints
//! CA with pathlen 0 (critical), keyUsage keyCertSign and cRLSign (critical), a subject key
//! identifier, a random 16-byte serial, valid from a day back (clocks on phones and routers
//! drift) for `--days`. The key is written first, with mode 0600, and neither file is ever
//! overwritten: a CA that clients already trust must not be replaced by accident. What it
//! prints is, for each kind of client, the one step that makes it trust the certificate.
//!
//! X.509 is rcgen's (over ring, which rustls already brings); this file only chooses the
//! fields. Built with the `tls-server` feature; without it `ca new` says the build lacks it.

use std::path::Path;

use crate::config::CaNewArgs;

/// Longest `--days`: a root that outlives the deployment it was made for is a liability, and
/// 20 years is already far beyond any machine this runs on.
pub const MAX_DAYS: u32 = 20 * 365;
/// `--days` when not given: ten years, as mkcert does, so a router's CA is made once.
pub const DEFAULT_DAYS: u32 = 10 * 365;

/// Makes the CA that `args` describes and returns what to print: the files written and how
/// each client comes to trust the certificate. Errors are one line for the user.
#[cfg(feature = "tls-server")]
pub fn create(args: &CaNewArgs) -> Result<String, String> {
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
    dn.push(DnType::CommonName, args.name.clone().unwrap_or_else(default_name));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
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

/// Without the `tls-server` feature there is no certificate code in the binary.
#[cfg(not(feature = "tls-server"))]
pub fn create(_: &CaNewArgs) -> Result<String, String> {
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
        .map_err(|_| "ca new: no random numbers from the system".to_string())?;
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
