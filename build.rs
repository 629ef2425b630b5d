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
