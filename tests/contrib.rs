//! The files in `contrib/` and the configurations in `docs/scale-out.md`, checked by the
//! programs that read them in the field (SPEC §12): `systemd-analyze verify` on the units,
//! `shellcheck` on the shell, the OpenWrt init script's UCI → flags code run under busybox
//! `ash` against the sample UCI file, the package Makefile run against a stand-in for the
//! SDK's includes, `logrotate` on its snippet, `haproxy -c` and `promtool` on the documented
//! configurations. The flags the samples build are then given to the real binary, which must
//! start with them: a sample that names a flag smolproxy does not have fails here. smolproxy
//! also runs under strace once, so that every system call and socket family it uses is shown
//! to be allowed by the unit's `SystemCallFilter=` and `RestrictAddressFamilies=`.
//!
//! Each check also shows once that it can fail (a unit with an unknown setting, a script with
//! an unquoted variable, a wrong balance algorithm, a broken query), so a tool that silently
//! does nothing cannot pass for a good file. A missing tool prints `SKIP: ...` on a developer
//! machine and fails under `CI=true`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Longest any of the tools may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an access-log line may take to reach its file after the response.
const LOG_WAIT: Duration = Duration::from_secs(5);

/// A file of the source tree, by its path from the root.
fn source(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The text of a file of the source tree.
fn read_source(path: &str) -> String {
    fs::read_to_string(source(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Runs a tool to its end; panics if it had to be killed.
fn run(cmd: &mut Command) -> Finished {
    let shown = format!("{cmd:?}");
    let done = run_to_exit(std::mem::replace(cmd, Command::new("true")), TOOL_TIMEOUT);
    assert!(done.code.is_some(), "{shown} did not finish: {done:?}");
    done
}

/// Starts the binary under test with exactly `args` (as an init system would: no `--listen`
/// added), with the proxy environment variables cleared.
fn start_with(args: &[impl AsRef<std::ffi::OsStr>]) -> Proxy {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    Proxy::spawn(cmd)
}

/// `text` with the comment mark taken off every line that starts with `#` and then one of
/// `starts` (the commented alternatives of a sample file).
fn uncomment(text: &str, starts: &[&str]) -> String {
    text.lines()
        .map(|line| {
            let (indent, rest) = line.split_at(line.len() - line.trim_start().len());
            match rest.strip_prefix('#') {
                Some(body) if starts.iter().any(|s| body.starts_with(s)) => {
                    format!("{indent}{body}\n")
                }
                _ => format!("{line}\n"),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------------------------

/// The settings each unit carries commented out, as alternatives.
const UNIT_ALTERNATIVES: [&str; 4] = [
    "LoadCredential=",
    "ExecStartPre=",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
];

/// Writes `body` as the unit file `name` in `dir` and runs `systemd-analyze verify` on it.
/// Returns its complaints about this unit: every line that names the file or the unit, and
/// a non-zero exit. Lines about anything else (the machine's own units) are left out.
fn verify_unit(dir: &Path, name: &str, body: &str) -> Vec<String> {
    let path = dir.join(name);
    fs::write(&path, body).unwrap();
    let done = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    let mut complaints: Vec<String> = done
        .stdout
        .lines()
        .chain(done.stderr.lines())
        .filter(|l| l.contains(name))
        .map(str::to_owned)
        .collect();
    if done.code != Some(0) {
        complaints.push(format!(
            "exit {:?}: {}{}",
            done.code, done.stdout, done.stderr
        ));
    }
    complaints
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if !need_tool("systemd-analyze") {
        return;
    }
    let dir = temp_dir("units");
    // The template is verified as an instance of it, under that instance's name.
    for (file, name) in [
        ("smolproxy.service", "smolproxy.service"),
        ("smolproxy@.service", "smolproxy@1.service"),
    ] {
        // ExecStart must name an executable that exists: the binary under test.
        let shipped =
            read_source(&format!("contrib/systemd/{file}")).replace("/usr/bin/smolproxy", bin());
        let alternatives = uncomment(&shipped, &UNIT_ALTERNATIVES);
        assert_ne!(
            alternatives, shipped,
            "{file} lost its commented alternatives"
        );
        for (variant, body) in [("as shipped", &shipped), ("alternatives on", &alternatives)] {
            let complaints = verify_unit(&dir, name, body);
            assert!(complaints.is_empty(), "{file} ({variant}): {complaints:#?}");
        }
        // The check is live: an unknown setting is reported (only as a warning, exit 0).
        let broken = shipped.replacen("[Service]\n", "[Service]\nNoSuchSetting=yes\n", 1);
        let complaints = verify_unit(&dir, name, &broken);
        assert!(
            complaints.iter().any(|l| l.contains("NoSuchSetting")),
            "systemd-analyze verify let an unknown setting pass: {complaints:?}"
        );
    }
}

/// The system calls of a `SystemCallFilter=` group, nested groups expanded, as
/// `systemd-analyze syscall-filter` lists them.
fn syscall_group(group: &str) -> Vec<String> {
    let done = run(Command::new("systemd-analyze").args(["syscall-filter", group]));
    assert_eq!(done.code, Some(0), "{done:?}");
    let mut calls = Vec::new();
    // The first line is the group's own name.
    for entry in done.stdout.lines().skip(1).map(str::trim) {
        match entry {
            "" => {}
            e if e.starts_with('#') => {}
            e if e.starts_with('@') => calls.extend(syscall_group(e)),
            e => calls.push(e.to_owned()),
        }
    }
    calls
}

/// The values of every `NAME=` line of a unit, split on whitespace.
fn unit_values(unit: &str, name: &str) -> Vec<String> {
    let prefix = format!("{name}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

#[test]
fn systemd_unit_filters_allow_what_smolproxy_does() {
    if !(need_tool("strace") && need_tool("systemd-analyze")) {
        return;
    }
    // What the unit allows: SystemCallFilter= groups, minus the `~` ones;
    // RestrictAddressFamilies=.
    let unit = read_source("contrib/systemd/smolproxy.service");
    let (mut allowed, mut denied) = (Vec::new(), Vec::new());
    for value in unit_values(&unit, "SystemCallFilter") {
        match value.strip_prefix('~') {
            Some(group) => denied.extend(syscall_group(group)),
            None if value.starts_with('@') => allowed.extend(syscall_group(&value)),
            None => allowed.push(value),
        }
    }
    let families = unit_values(&unit, "RestrictAddressFamilies");
    assert!(!allowed.is_empty() && !denied.is_empty() && !families.is_empty());

    // What smolproxy does, seen by strace: start, a request to an origin named `localhost`
    // (the C library's resolver), a CONNECT tunnel carrying bulk data (splice), a reload of
    // the access log, and the drain at SIGTERM.
    let dir = temp_dir("strace");
    let trace = dir.join("trace");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o"]).arg(&trace).arg(bin());
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--connect-ports",
        "any",
        "--access-log",
    ]);
    cmd.arg(dir.join("access.log"));
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    let mut proxy = Proxy::spawn(cmd);
    let origin = Origin::echo();
    let url = format!("http://localhost:{}/traced", origin.port());
    assert_eq!(get(proxy.addr, &url).status(), 200);
    let echo = Origin::tcp_echo();
    let mut tunnel = Conn::connect(proxy.addr);
    let target = echo.authority();
    tunnel.write(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes());
    let head = tunnel.read_head().unwrap().expect("an answer to CONNECT");
    assert_eq!(head.status(), 200);
    let data = pattern(1 << 20, 7);
    let mut writer = tunnel.stream.try_clone().unwrap();
    let sent = data.clone();
    let w = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    // The echo sends every byte back, then BYE.
    let mut expected = data.clone();
    expected.extend_from_slice(b"BYE");
    assert_eq!(fnv64(&tunnel.read_to_end().unwrap()), fnv64(&expected));
    w.join().unwrap();
    // strace is the child; smolproxy is the first process in its trace.
    let text = fs::read_to_string(&trace).unwrap();
    let pid = text.split_whitespace().next().expect("a trace").to_owned();
    let signal = |name: &str| {
        let done = run(Command::new("kill").arg(format!("-{name}")).arg(&pid));
        assert_eq!(done.code, Some(0), "{done:?}");
    };
    signal("HUP");
    assert!(
        proxy.wait_for_log(LOG_WAIT, "reloaded").is_some(),
        "{:?}",
        proxy.stderr_lines()
    );
    signal("TERM");
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}: {:?}", proxy.stderr_lines());

    // Every call made is allowed, none is denied, every socket is of an allowed family.
    let text = fs::read_to_string(&trace).unwrap();
    let mut calls: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.trim_start()))
        .filter(|l| !l.starts_with("---") && !l.starts_with("+++") && !l.starts_with('<'))
        .filter_map(|l| l.split_once('(').map(|(name, _)| name))
        .collect();
    calls.sort_unstable();
    calls.dedup();
    assert!(
        calls.contains(&"splice") && calls.contains(&"accept4"),
        "{calls:?}"
    );
    let refused: Vec<&&str> = calls
        .iter()
        .filter(|c| !allowed.iter().any(|a| a == *c) || denied.iter().any(|d| d == *c))
        .collect();
    assert!(
        refused.is_empty(),
        "refused by SystemCallFilter=: {refused:?}"
    );
    let used_families: Vec<&str> = text
        .split("socket(")
        .skip(1)
        .filter_map(|rest| rest.split(',').next())
        .collect();
    assert!(!used_families.is_empty());
    for family in used_families {
        assert!(
            families.iter().any(|f| f == family),
            "socket({family}, ...) refused by RestrictAddressFamilies="
        );
    }
}

/// The flags the units would pass from the sample /etc/default/smolproxy: the file sourced by
/// a shell (its double-quoted, backslash-continued values read the same in sh and in systemd),
/// then `$SMOLPROXY_ARGS $SMOLPROXY_INSTANCE_ARGS` split on whitespace as systemd splits an
/// unbraced variable.
fn default_file_args(file: &Path) -> Vec<String> {
    let done = run(Command::new("sh")
        .arg("-c")
        .arg(r#". "$1" && printf '%s\n' $SMOLPROXY_ARGS $SMOLPROXY_INSTANCE_ARGS"#)
        .arg("sh")
        .arg(file));
    assert_eq!(done.code, Some(0), "{done:?}");
    done.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn systemd_sample_flags_start_the_proxy() {
    let shipped = read_source("contrib/systemd/smolproxy.conf");
    let dir = temp_dir("default-file");
    let file = dir.join("smolproxy");
    fs::write(&file, &shipped).unwrap();
    let expected = [
        "--listen",
        "0.0.0.0:3128",
        "--allow-client",
        "192.168.1.0/24,127.0.0.1",
        "--block-private",
        "--connect-ports",
        "443,8443",
        "--max-connections",
        "1024",
        "--log-format",
        "json",
        "--metrics-listen",
        "127.0.0.1:9128",
        "--capture",
        "/var/lib/smolproxy/capture.ndjson",
    ];
    assert_eq!(default_file_args(&file), expected);

    // The same flags on loopback and in this test's directory, with what each unit adds.
    let capture = dir.join("capture.ndjson");
    let local = shipped
        .replace("0.0.0.0:3128", "127.0.0.1:0")
        .replace("127.0.0.1:9128", "127.0.0.1:0")
        .replace(
            "/var/lib/smolproxy/capture.ndjson",
            capture.to_str().unwrap(),
        );
    fs::write(&file, local).unwrap();
    let args = default_file_args(&file);
    for (unit, added) in [
        ("smolproxy.service", vec!["--access-log", "access.log"]),
        (
            "smolproxy@1.service",
            vec!["--reuse-port", "--access-log", "access-1.log"],
        ),
    ] {
        let log = dir.join(added[added.len() - 1]);
        let mut all: Vec<String> = added[..added.len() - 1]
            .iter()
            .map(|a| a.to_string())
            .collect();
        all.push(log.to_str().unwrap().to_owned());
        all.extend(args.iter().cloned());
        let proxy = start_with(&all);
        // --block-private is in force: a loopback origin is refused, and the log says so.
        let origin = Origin::echo();
        let res = get(proxy.addr, &origin.url("/from-the-sample"));
        assert_eq!(res.status(), 403, "{unit}: {}", res.text());
        let line = wait_for_file_line(&log, "/from-the-sample");
        assert!(line.starts_with('{'), "{unit}: --log-format json: {line}");
        assert_eq!(origin.requests(), 0, "{unit}");
    }
}

/// Waits for a line holding `needle` in the file at `path` and returns it.
fn wait_for_file_line(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} in {}: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Shell
// ---------------------------------------------------------------------------------------------

/// The postrotate script of the logrotate snippet, as a file of its own.
fn postrotate_script(dir: &Path) -> PathBuf {
    let snippet = read_source("contrib/logrotate/smolproxy");
    let start = snippet.find("postrotate\n").expect("a postrotate script") + "postrotate\n".len();
    let end = snippet.find("endscript").expect("an endscript");
    let path = dir.join("postrotate.sh");
    fs::write(&path, &snippet[start..end]).unwrap();
    path
}

#[test]
fn contrib_shell_passes_shellcheck() {
    if !need_tool("shellcheck") {
        return;
    }
    let dir = temp_dir("shellcheck");
    let files = [
        source("contrib/openwrt/files/smolproxy.init"),
        source("tests/fixtures/openwrt/functions.sh"),
        postrotate_script(&dir),
    ];
    let done = run(Command::new("shellcheck").args(["-s", "sh"]).args(&files));
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);

    // The check is live: an unquoted expansion is reported.
    let bad = dir.join("bad.sh");
    fs::write(&bad, "rm $1\n").unwrap();
    let done = run(Command::new("shellcheck").args(["-s", "sh"]).arg(&bad));
    assert!(done.stdout.contains("SC2086"), "{done:?}");
}

// ---------------------------------------------------------------------------------------------
// OpenWrt
// ---------------------------------------------------------------------------------------------

/// Runs `call` after sourcing the test's stand-in for OpenWrt's functions.sh and procd.sh, then
/// the init script, under busybox ash, with the UCI file `uci` as /etc/config/smolproxy.
/// Returns what the stand-ins printed, one line each.
fn init_script(dir: &Path, uci: &str, call: &str) -> Vec<String> {
    let config = dir.join("config");
    fs::create_dir_all(&config).unwrap();
    fs::write(config.join("smolproxy"), uci).unwrap();
    let done = run(Command::new("busybox")
        .args(["ash", "-c"])
        .arg(format!(r#". "$1" && . "$2" && {call}"#))
        .arg("ash")
        .arg(source("tests/fixtures/openwrt/functions.sh"))
        .arg(source("contrib/openwrt/files/smolproxy.init"))
        .env("UCI_CONFIG_DIR", &config));
    assert_eq!(done.code, Some(0), "{call}: {done:?}");
    assert_eq!(done.stderr, "", "{call}");
    done.stdout.lines().map(str::to_owned).collect()
}

/// The flags `smolproxy_args main` builds from `uci` (as start_service calls it).
fn uci_flags(dir: &Path, uci: &str) -> Vec<String> {
    init_script(dir, uci, "config_load smolproxy && smolproxy_args main")
        .iter()
        .map(|l| {
            let arg = l.strip_prefix("arg <").and_then(|a| a.strip_suffix('>'));
            arg.unwrap_or_else(|| panic!("not an argument: {l}"))
                .to_owned()
        })
        .collect()
}

/// The sample UCI file with every commented option and list turned on, except `user` (not
/// a flag; a user that exists on the router).
fn uci_everything() -> String {
    let shipped = read_source("contrib/openwrt/files/smolproxy.config");
    let on = uncomment(&shipped, &["option ", "list "]);
    on.replace("\toption user ", "\t#option user ")
}

#[test]
fn openwrt_uci_builds_the_expected_flags() {
    if !need_tool("busybox") {
        return;
    }
    let dir = temp_dir("uci-flags");
    let shipped = read_source("contrib/openwrt/files/smolproxy.config");
    let expected = [
        "--listen",
        "192.168.1.1:3128",
        "--allow-client",
        "192.168.1.0/24",
        "--allow-client",
        "127.0.0.1",
        "--connect-ports",
        "443",
        "--connect-ports",
        "8443",
        "--max-connections",
        "256",
        "--idle-timeout",
        "2m",
        "--log-format",
        "text",
        "--metrics-listen",
        "127.0.0.1:9128",
        "--block-private",
        "--no-system-proxy",
    ];
    assert_eq!(uci_flags(&dir, &shipped), expected);

    // Every option the sample shows, in the order of the script's tables (lists, then values,
    // then switches), each list item in its order.
    let everything = [
        "--listen",
        "192.168.1.1:3128",
        "--allow-client",
        "192.168.1.0/24",
        "--allow-client",
        "127.0.0.1",
        "--auth-exempt",
        "192.168.1.0/24",
        "--upstream",
        "http://10.0.0.1:8080",
        "--bypass",
        "<local>",
        "--bypass",
        "192.168.0.0/16",
        "--deny",
        "*.doubleclick.net",
        "--connect-ports",
        "443",
        "--connect-ports",
        "8443",
        "--auth-file",
        "/etc/smolproxy/users",
        "--authz-url",
        "http://192.168.1.10:8080/validate",
        "--authz-fail",
        "closed",
        "--capture",
        "/tmp/smolproxy-capture.ndjson",
        "--capture-body-limit",
        "16384",
        "--max-connections",
        "256",
        "--idle-timeout",
        "2m",
        "--access-log",
        "/tmp/log/smolproxy/access.log",
        "--log-format",
        "text",
        "--metrics-listen",
        "127.0.0.1:9128",
        "--block-private",
        "--no-system-proxy",
        "--quiet",
    ];
    assert_eq!(uci_flags(&dir, &uci_everything()), everything);

    // A list may also be one option, comma-separated; empty values and false switches give
    // no flag.
    let short = "config smolproxy 'main'\n\toption listen '127.0.0.1:1,[::1]:2'\n\
                 \toption realm ''\n\tlist bypass ''\n\toption quiet '0'\n\toption no_via 'yes'\n";
    assert_eq!(
        uci_flags(&dir, short),
        ["--listen", "127.0.0.1:1,[::1]:2", "--no-via"]
    );
}

#[test]
fn openwrt_start_service_runs_the_proxy_under_procd() {
    if !need_tool("busybox") {
        return;
    }
    let dir = temp_dir("uci-start");
    let local = read_source("contrib/openwrt/files/smolproxy.config")
        .replace("192.168.1.1:3128", "127.0.0.1:0")
        .replace("127.0.0.1:9128", "127.0.0.1:0");
    let lines = init_script(&dir, &local, "start_service");
    assert_eq!(lines[0], "instance smolproxy");
    assert_eq!(lines[1], "param command </usr/bin/smolproxy>");
    for param in [
        "param respawn <3600> <5> <5>",
        "param term_timeout <10>",
        "param stdout <1>",
        "param stderr <1>",
    ] {
        assert!(lines.iter().any(|l| l == param), "{param} in {lines:#?}");
    }
    assert_eq!(lines.last().map(String::as_str), Some("close"));

    // procd would run /usr/bin/smolproxy with these: the binary under test does.
    let flags: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("arg <")?.strip_suffix('>'))
        .map(str::to_owned)
        .collect();
    let proxy = start_with(&flags);
    let origin = Origin::echo();
    // --block-private (from block_private '1') is in force for a loopback origin.
    let res = get(proxy.addr, &origin.url("/from-uci"));
    assert_eq!(res.status(), 403, "{}", res.text());
    assert_eq!(origin.requests(), 0);
    drop(proxy);

    // Every option of the sample on, its files in this test's directory: smolproxy takes them.
    let users = dir.join("users");
    fs::write(&users, "ann:pw\n").unwrap();
    let everything = uci_everything()
        .replace("192.168.1.1:3128", "127.0.0.1:0")
        .replace("127.0.0.1:9128", "127.0.0.1:0")
        .replace("/etc/smolproxy/users", users.to_str().unwrap())
        .replace(
            "/tmp/log/smolproxy/access.log",
            dir.join("access.log").to_str().unwrap(),
        )
        .replace(
            "/tmp/smolproxy-capture.ndjson",
            dir.join("capture.ndjson").to_str().unwrap(),
        );
    let _proxy = start_with(&uci_flags(&dir, &everything));

    // enabled '0': no instance at all.
    let off = local.replace("option enabled '1'", "option enabled '0'");
    assert_eq!(
        init_script(&dir, &off, "start_service"),
        Vec::<String>::new()
    );
}

/// A stand-in for the OpenWrt SDK's make includes, enough to run the package Makefile's
/// preparation and install steps: `make check` copies the sources as Build/Prepare does,
/// installs the package into `$(ROOT)` as Package/smolproxy/install does, and prints the
/// values the build would use.
const SDK_STUB: [(&str, &str); 3] = [
    (
        "rules.mk",
        "CP:=cp -fpR\nINSTALL_DIR:=install -d -m0755\nINSTALL_BIN:=install -m0755\n\
         INSTALL_CONF:=install -m0600\n",
    ),
    (
        "include/package.mk",
        "PKG_BUILD_DIR?=$(BUILD_DIR)/$(PKG_NAME)-$(PKG_VERSION)\n\
         define BuildPackage\n\
         check:\n\
         \t$(Build/Prepare)\n\
         \t$(call Package/$(1)/install,$(ROOT))\n\
         \t@echo 'version=$(PKG_VERSION)'\n\
         \t@echo 'features=$(RUST_PKG_FEATURES)'\n\
         \t@echo 'args=$(strip $(CARGO_PKG_ARGS))'\n\
         \t@echo 'vars=$(strip $(CARGO_PKG_VARS))'\n\
         \t@echo 'conffiles=$(strip $(Package/$(1)/conffiles))'\n\
         endef\n",
    ),
    (
        "feeds/packages/lang/rust/rust-package.mk",
        "RUST_ARCH_DEPENDS:=@(x86_64)\nCARGO_PKG_VARS=CARGO_PROFILE_RELEASE_PANIC=unwind\n\
         CARGO_PKG_ARGS= --locked\n",
    ),
];

#[test]
fn openwrt_makefile_prepares_and_installs_the_package() {
    if !need_tool("make") {
        return;
    }
    let dir = temp_dir("openwrt-make");
    let sdk = dir.join("sdk");
    for (path, text) in SDK_STUB {
        let file = sdk.join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, text).unwrap();
    }
    // What cargo would have installed.
    let installed = dir.join("install/bin");
    fs::create_dir_all(&installed).unwrap();
    fs::copy(bin(), installed.join("smolproxy")).unwrap();
    let (build, root) = (dir.join("build"), dir.join("root"));
    let done = run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(source("contrib/openwrt"))
        .arg(format!("TOPDIR={}", sdk.display()))
        .arg(format!("INCLUDE_DIR={}", sdk.join("include").display()))
        .arg(format!("BUILD_DIR={}", build.display()))
        .arg(format!("PKG_INSTALL_DIR={}", dir.join("install").display()))
        .arg(format!("ROOT={}", root.display()))
        .arg("check"));
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);
    let version = read_source("Cargo.toml")
        .lines()
        .find_map(|l| {
            l.strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(str::to_owned)
        })
        .unwrap();
    let out: Vec<&str> = done.stdout.lines().collect();
    assert_eq!(out[0], format!("version={version}"));
    assert_eq!(out[1], "features=tls");
    assert_eq!(out[2], "args=--locked --no-default-features");
    // smolproxy's own profile after the feed's.
    assert_eq!(
        out[3],
        "vars=CARGO_PROFILE_RELEASE_PANIC=unwind CARGO_PROFILE_RELEASE_PANIC=abort \
         CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=false"
    );
    assert_eq!(out[4], "conffiles=/etc/config/smolproxy");

    // The sources cargo builds from: the checkout the Makefile sits in.
    let prepared = build.join(format!("smolproxy-{version}"));
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src/main.rs",
        "examples/bench.rs",
    ] {
        let copy = fs::read(prepared.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(copy, fs::read(source(file)).unwrap(), "{file}");
    }
    // The package's files, where OpenWrt looks for them.
    use std::os::unix::fs::PermissionsExt;
    for (file, from, mode) in [
        ("usr/bin/smolproxy", None, 0o755),
        (
            "etc/init.d/smolproxy",
            Some("contrib/openwrt/files/smolproxy.init"),
            0o755,
        ),
        (
            "etc/config/smolproxy",
            Some("contrib/openwrt/files/smolproxy.config"),
            0o600,
        ),
    ] {
        let path = root.join(file);
        let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        if let Some(from) = from {
            assert_eq!(
                fs::read(&path).unwrap(),
                fs::read(source(from)).unwrap(),
                "{file}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// logrotate
// ---------------------------------------------------------------------------------------------

/// Runs logrotate on `config` with its own state file in `dir`; `extra` are more options.
/// Returns its output, after checking it reported no error.
fn logrotate(dir: &Path, config: &Path, extra: &[&str]) -> String {
    let done = run(Command::new("logrotate")
        .args(extra)
        .arg("-s")
        .arg(dir.join("state"))
        .arg(config));
    let out = format!("{}{}", done.stdout, done.stderr);
    assert_eq!(done.code, Some(0), "{out}");
    // logrotate reports a bad line with "error:" and still exits 0.
    assert!(!out.to_lowercase().contains("error"), "{out}");
    out
}

#[test]
fn logrotate_moves_the_access_log_and_smolproxy_reopens_it() {
    if !need_tool("logrotate") {
        return;
    }
    let dir = temp_dir("logrotate");
    // As shipped: parses, in debug mode (nothing is touched).
    let out = logrotate(&dir, &source("contrib/logrotate/smolproxy"), &["-d"]);
    assert!(out.contains("/var/log/smolproxy/*.log"), "{out}");

    // For real, in this test's directory, with the HUP sent to the proxy the test started.
    let logs = dir.join("log");
    fs::create_dir_all(&logs).unwrap();
    let log = logs.join("access.log");
    let proxy = Proxy::start(&["--access-log", log.to_str().unwrap()]);
    let origin = Origin::echo();
    assert_eq!(get(proxy.addr, &origin.url("/before")).status(), 200);
    wait_for_file_line(&log, "/before");
    let snippet = read_source("contrib/logrotate/smolproxy");
    let reload = snippet
        .lines()
        .find(|l| l.trim_start().starts_with("systemctl reload"))
        .expect("the postrotate command");
    let config = dir.join("smolproxy");
    let local = snippet
        .replace("/var/log/smolproxy", logs.to_str().unwrap())
        .replace(reload, &format!("        kill -HUP {}", proxy.pid()));
    fs::write(&config, local).unwrap();
    logrotate(&dir, &config, &["-f"]);

    // The old lines moved, uncompressed (delaycompress); the next ones in a new file at the
    // old path.
    let moved = fs::read_to_string(logs.join("access.log.1")).expect("access.log.1");
    assert!(moved.contains("/before"), "{moved}");
    assert!(
        proxy.wait_for_log(LOG_WAIT, "reloaded").is_some(),
        "{:?}",
        proxy.stderr_lines()
    );
    assert_eq!(get(proxy.addr, &origin.url("/after")).status(), 200);
    wait_for_file_line(&log, "/after");
    let moved = fs::read_to_string(logs.join("access.log.1")).unwrap();
    assert!(!moved.contains("/after"), "{moved}");
}

// ---------------------------------------------------------------------------------------------
// docs/scale-out.md
// ---------------------------------------------------------------------------------------------

/// The code blocks of a markdown file marked with `lang` (```` ```lang ````), in order.
fn code_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    let mut blocks = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```\n").expect("a closed code block");
        blocks.push(body[..end].to_owned());
        rest = &body[end..];
    }
    blocks
}

#[test]
fn scale_out_haproxy_configs_pass_haproxy_check() {
    if !need_tool("haproxy") {
        return;
    }
    let doc = read_source("docs/scale-out.md");
    let blocks = code_blocks(&doc, "haproxy");
    assert_eq!(blocks.len(), 2, "the full config and the /healthz backend");
    // The second is a backend to use instead of the first's: checked inside the first, under
    // a name of its own.
    let text = format!(
        "{}\n{}",
        blocks[0],
        blocks[1].replace("backend smolproxy", "backend smolproxy_healthz")
    );
    let dir = temp_dir("haproxy-doc");
    let config = dir.join("haproxy.cfg");
    fs::write(&config, &text).unwrap();
    let done = run(Command::new("haproxy").arg("-c").arg("-f").arg(&config));
    let out = format!("{}{}", done.stdout, done.stderr);
    assert_eq!(done.code, Some(0), "{out}");
    assert!(!out.contains("[WARNING]"), "{out}");

    // The check is live: an unknown keyword is an error.
    fs::write(
        &config,
        text.replace("balance leastconn", "balance nosuchway"),
    )
    .unwrap();
    let done = run(Command::new("haproxy").arg("-c").arg("-f").arg(&config));
    assert_ne!(done.code, Some(0), "{done:?}");
}

#[test]
fn scale_out_prometheus_config_and_queries_pass_promtool() {
    if !need_tool("promtool") {
        return;
    }
    let doc = read_source("docs/scale-out.md");
    let dir = temp_dir("promtool-doc");
    let [scrape] = &code_blocks(&doc, "yaml")[..] else {
        panic!("one yaml block expected");
    };
    let config = dir.join("prometheus.yml");
    fs::write(&config, scrape).unwrap();
    let done = run(Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(&config));
    assert_eq!(done.code, Some(0), "{}{}", done.stdout, done.stderr);

    // Each query as a recording rule, which promtool parses.
    let [queries] = &code_blocks(&doc, "promql")[..] else {
        panic!("one promql block expected");
    };
    let mut exprs: Vec<String> = Vec::new();
    for line in queries.lines() {
        match line {
            l if l.starts_with('#') || l.trim().is_empty() => exprs.push(String::new()),
            l if l.starts_with(' ') => exprs.last_mut().unwrap().push_str(l),
            l => exprs.push(l.to_owned()),
        }
    }
    exprs.retain(|e| !e.is_empty());
    assert!(exprs.len() >= 6, "{exprs:?}");
    let mut rules = String::from("groups:\n  - name: scale-out\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: smolproxy:doc_{i}\n        expr: '{expr}'\n"
        ));
    }
    let file = dir.join("rules.yml");
    fs::write(&file, &rules).unwrap();
    let done = run(Command::new("promtool").args(["check", "rules"]).arg(&file));
    assert_eq!(done.code, Some(0), "{rules}{}{}", done.stdout, done.stderr);

    // The check is live: a broken query is refused.
    fs::write(&file, rules.replace("sum by", "sum by by")).unwrap();
    let done = run(Command::new("promtool").args(["check", "rules"]).arg(&file));
    assert_ne!(done.code, Some(0), "{done:?}");
}
