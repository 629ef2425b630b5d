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
