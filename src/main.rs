//! The `smolproxy` command: parse flags, check them, listen, serve.

use std::process::ExitCode;

use argh::FromArgs;
use smolproxy::config::Flags;
use smolproxy::server::Server;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    let flags = match Flags::from_args(&strs[..1], &strs[1..]) {
        Ok(f) => f,
        Err(exit) if exit.status.is_ok() => {
            println!("{}", exit.output);
            return ExitCode::SUCCESS;
        }
        Err(exit) => {
            // argh's first line names the flag and the value; ours says what was expected.
            eprintln!("smolproxy: {}", exit.output.lines().next().unwrap_or("bad arguments"));
            return ExitCode::from(2);
        }
    };
    let cfg = match flags.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smolproxy: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::bind(cfg.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("smolproxy: {e}");
            return ExitCode::from(1);
        }
    };
    for addr in server.local_addrs() {
        eprintln!("listening on {addr}");
        if !addr.ip().is_loopback() {
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
