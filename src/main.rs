//! The `smolproxy` command: parse flags, check them, listen, serve.

use std::io::Write;
use std::process::ExitCode;

use argh::FromArgs;
#[cfg(feature = "tls")]
use smolproxy::config::{CaArgs, CaCommand};
use smolproxy::config::{Command, Flags};
use smolproxy::server::Server;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let flags = match Flags::from_args(&["smolproxy"], strs.get(1..).unwrap_or_default()) {
        Ok(f) => f,
        Err(exit) if exit.status.is_ok() => {
            // A closed pipe (`smolproxy --help | head -1`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{}", exit.output);
            return ExitCode::SUCCESS;
        }
        Err(exit) => {
            // argh's first line names the flag and the value; ours says what was expected.
            eprintln!(
                "smolproxy: {}",
                exit.output.lines().next().unwrap_or("bad arguments")
            );
            return ExitCode::from(2);
        }
    };
    #[cfg(feature = "export")]
    if let Some(Command::Export(args)) = &flags.command {
        return smolproxy::export::run(args);
    }
    #[cfg(feature = "tls")]
    if let Some(Command::Ca(CaArgs {
        command: CaCommand::New(args),
    })) = &flags.command
    {
        let new = smolproxy::ca::NewCa {
            cert: args.cert.clone(),
            key: args.key.clone(),
            name: args.name.clone(),
            days: args.days,
        };
        return match smolproxy::ca::create(&new) {
            Ok(text) => {
                let _ = write!(std::io::stdout(), "{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("smolproxy: {e}");
                ExitCode::from(1)
            }
        };
    }
    let route_args = match &flags.command {
        Some(Command::Route(args)) => Some(args.clone()),
        _ => None,
    };
    let auth_in_argv = !flags.auth.is_empty();
    let mut cfg = match flags.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smolproxy: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(refused) = cfg.read_files() {
        eprintln!("smolproxy: {}", refused.message);
        return ExitCode::from(refused.status);
    }
    for warning in &cfg.routing.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(args) = route_args {
        return match smolproxy::explain::explain(&cfg, &args) {
            Ok(e) => {
                let _ = write!(std::io::stdout(), "{}", e.text);
                ExitCode::from(if e.allowed { 0 } else { 1 })
            }
            Err(e) => {
                eprintln!("smolproxy: {e}");
                ExitCode::from(2)
            }
        };
    }
    if auth_in_argv {
        eprintln!(
            "warning: --auth puts passwords on the command line, which other local users can read; \
             prefer --auth-file or SMOLPROXY_AUTH"
        );
    }
    if !cfg.access.exempt.is_empty() && !cfg.access.asks_credentials() {
        eprintln!("warning: --auth-exempt has no effect: no users are configured");
    }
    let server = match Server::bind(cfg.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("smolproxy: {e}");
            return ExitCode::from(1);
        }
    };
    // Before the `listening on` lines: who waits for those then knows this one too.
    if let Some(addr) = server.metrics_addr() {
        eprintln!("metrics on {addr}");
    }
    for (addr, tls) in server.local_addrs() {
        let kind = if tls { " (TLS)" } else { "" };
        eprintln!("listening on {addr}{kind}");
        if !addr.ip().is_loopback() && cfg.access.is_open() {
            eprintln!("warning: listening on {addr} without credentials or --allow-client: this is an open proxy");
        }
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smolproxy: {e}");
            ExitCode::from(1)
        }
    }
}
