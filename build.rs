//! Link flags for the release binary only: not for tests, examples, build scripts, or crates
//! that link the library (the fuzz targets).
//!
//! On Linux, a linker script discards `.eh_frame` and `.gcc_except_table` (`.eh_frame_hdr`
//! goes with them): 200 KB of the 1.7 MB binary with TLS, 104 KB of 0.8 MB without
//! (scripts/size.sh). With panic = "abort" nothing unwinds: the tables only served the frame
//! addresses of `RUST_BACKTRACE=full` (the binary is stripped, so there were no names) and
//! stack walks in debuggers. A panic still prints its message and aborts.
//! `SMOLPROXY_UNWIND_TABLES=keep cargo build --release` keeps them.
//!
//! On x86_64-unknown-linux-gnu with Rust 1.90 or later, whose default linker is rust-lld,
//! identical functions are folded (`--icf=all`): 12 KB with TLS, 7 KB without. Rust makes no
//! promise that distinct functions have distinct addresses, so folding them is allowed.
//! There too, relative relocations are packed (`-z pack-relative-relocs`, DT_RELR): the
//! position-independent binary keeps its address randomisation, and `.rela.dyn` shrinks from
//! 27 KB to 2.6 KB without features (scripts/size.sh). The loader must know DT_RELR: glibc 2.36
//! or later (Debian 12), musl 1.2.4 or later.
//!
//! PROFILE is "release" for every profile that inherits from it, `cargo test --release` too:
//! a failing #[test] in src/main.rs would then abort instead of being reported. There are
//! none; the integration tests are their own targets, untouched.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SMOLPROXY_UNWIND_TABLES");
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("PROFILE") != "release"
        || var("CARGO_CFG_TARGET_OS") != "linux"
        || var("SMOLPROXY_UNWIND_TABLES") == "keep"
    {
        return;
    }
    if var("TARGET") == "x86_64-unknown-linux-gnu" && lld_is_default(&var("RUSTC")) {
        println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let script = PathBuf::from(var("OUT_DIR")).join("discard-unwind-tables.ld");
    fs::write(
        &script,
        "SECTIONS { /DISCARD/ : { *(.eh_frame) *(.gcc_except_table .gcc_except_table.*) } }\n\
         INSERT AFTER .text;\n",
    )
    .expect("cannot write the linker script to OUT_DIR");
    // Two arguments, `-T` and the path: one `-Wl,-T,path` would split a path at commas.
    println!("cargo:rustc-link-arg-bins=-T");
    println!("cargo:rustc-link-arg-bins={}", script.display());
}

/// Whether `rustc` is 1.90 or later, the first whose x86_64 Linux linker is rust-lld (GNU ld
/// does not know `--icf`).
fn lld_is_default(rustc: &str) -> bool {
    let Ok(out) = std::process::Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().nth(1).unwrap_or("").split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (1, 90)
}
