//! Reading the files flags name (`--auth-file`, `--ca-file`, the interception CA, this host's
//! address tables): whole, bounded in size, with errors in a few lowercase words.
//!
//! A leaf: it knows nothing of what the files mean, so configuration and the TLS code can both
//! use it without depending on each other.

/// Reads a whole file of at most `max` bytes; errors in a few lowercase words.
pub fn read_limited(path: &std::path::Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let describe = |e: std::io::Error| crate::error::describe(&e);
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut text))
        .map_err(describe)?;
    if text.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(text)
}

/// Refuses a private key file that group or others can read (like ssh): whoever reads it can
/// impersonate this proxy, or with the interception CA every site. `flag` names it in the
/// message; the error is the exit status (1: unreadable, 2: refused) and one line.
pub fn private(flag: &str, path: &std::path::Path) -> Result<(), (u8, String)> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let mode = std::fs::metadata(path)
        .map_err(|e| {
            let why = crate::error::describe(&e);
            (1, format!("cannot read {flag} {shown}: {why}"))
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err((
            2,
            format!(
                "{flag} {shown} is readable by others (mode {:04o}); chmod 600 it",
                mode & 0o7777
            ),
        ));
    }
    Ok(())
}
