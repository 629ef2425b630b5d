//! SIGHUP (SPEC §12): the files the flags name are read again, without a restart.
//!
//! Read again: `--auth-file` (the `--auth` and `SMOLPROXY_AUTH` users stay), `--ca-file` (and
//! with it the system store), the TLS listener's `--tls-cert` and `--tls-key`, the interception
//! CA `--intercept-ca` and `--intercept-key` (a new CA starts an empty leaf cache), and this
//! host's addresses for `--block-private`; `--access-log` is opened again at its path, for
//! logrotate. Each file is judged alone: one that cannot be read or is refused keeps its
//! previous value, with one line on stderr in the words the start-up refusal would use, and
//! the others still change. A last line says what was read: `reloaded: auth-file (3 users),
//! access-log`. What was read becomes a new [`Live`] snapshot; connections take it from their
//! next request, and what they already opened goes on with the old one.
//!
//! Not read again: every flag (listeners, rules, routes, timeouts) and `--capture`'s file;
//! changing those needs a restart. Nothing here runs on the executor: `server.rs` calls
//! [`reload`] on the blocking pool, so a slow disk never stalls a connection.

use crate::error::describe;
use crate::proxy::{Live, Proxy};

/// Reads the reloadable files again and installs what they hold (see the top of this file).
pub fn reload(p: &Proxy) {
    let (cfg, old) = (&p.cfg, p.live());
    let mut done: Vec<String> = Vec::new();
    let kept = |what: &str, why: &str| eprintln!("reload: {why}; keeping the previous {what}");
    let mut access = old.access.clone();
    if cfg.auth_file.is_some() {
        match cfg.users() {
            Ok(users) => {
                let n = users.len() - cfg.auth_flag_users;
                done.push(format!("auth-file ({n} users)"));
                access.users = users;
            }
            Err(refused) => kept("users", &refused.message),
        }
    }
    let mut policy = old.policy.clone();
    if policy.blocks_private() {
        let addrs = crate::config::host_addresses();
        done.push(format!("host addresses ({})", addrs.len()));
        policy.set_host_addresses(addrs);
    }
    let mut trust = old.trust.clone();
    if !cfg.ca_files.is_empty() {
        match crate::tls::Trust::load(&cfg.ca_files, std::env::var("SSL_CERT_FILE").ok()) {
            Ok(read) => {
                done.push("ca-file".into());
                trust = read;
            }
            Err((_, why)) => kept("certificates", &why),
        }
    }
    #[cfg(feature = "tls-server")]
    let mut tls_server = old.tls_server.clone();
    #[cfg(feature = "tls-server")]
    if let Some((cert, key)) = &cfg.tls_files {
        match crate::tls::server::load(cert, key) {
            Ok(read) => {
                done.push("tls-cert".into());
                tls_server = Some(read);
            }
            Err((_, why)) => kept("certificate", &why),
        }
    }
    #[cfg(feature = "tls-server")]
    let mut intercept = old.intercept.clone();
    #[cfg(feature = "tls-server")]
    if let Some(i) = &cfg.intercept {
        let read = crate::ca::Ca::load(&i.ca_file, &i.key_file)
            .map_err(|(_, why)| why)
            .and_then(|ca| crate::intercept::Interceptor::new(std::sync::Arc::new(ca)));
        match read {
            Ok(read) => {
                done.push("intercept-ca".into());
                intercept = Some(std::sync::Arc::new(read));
            }
            Err(why) => kept("CA", &why),
        }
    }
    p.replace_live(Live {
        access,
        policy,
        trust,
        #[cfg(feature = "tls-server")]
        tls_server,
        #[cfg(feature = "tls-server")]
        intercept,
        generation: 0,
    });
    if let Some(path) = cfg.access_log.as_deref() {
        match p.log.reopen(path) {
            Ok(true) => done.push("access-log".into()),
            Ok(false) => {}
            Err(e) => kept(
                "file",
                &format!("cannot open access log {path}: {}", describe(&e)),
            ),
        }
    }
    if done.is_empty() {
        done.push("nothing".into());
    }
    eprintln!("reloaded: {}", done.join(", "));
}
