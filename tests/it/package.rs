//! The Debian package as `image/build-deb` builds it: its metadata and file list, the
//! systemd units (checked by `systemd-analyze verify` and for their sandboxing), and the
//! maintainer scripts (shellcheck, and never a plain `systemctl`).
//! Installing it for real is the image test's job (`scripts/slow/image`).

use std::path::{Path, PathBuf};
use std::process::Command;

use fugu_tests::fugu::{Root, bin};
use fugu_tests::process::require_program;

const UNITS: [&str; 3] = [
    "fugu-smtpd.service",
    "fugu-admin.service",
    "fugu-provision.service",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn golden(name: &str, actual: &str) {
    let path = repo().join("tests/golden").join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (bless with BLESS=1)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs (bless with BLESS=1)",
        path.display()
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Builds the package from the test build's binary (uncompressed: it is only inspected).
fn build_deb(root: &Root) -> PathBuf {
    require_program("dpkg-deb", "dpkg");
    let out = run(Command::new(repo().join("image/build-deb"))
        .arg(root.join("deb"))
        .env("FUGU_BIN", bin())
        .env("DEB_COMPRESS", "none")
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    let deb = PathBuf::from(out.trim());
    assert!(deb.is_file(), "build-deb printed {out:?}");
    deb
}

#[test]
fn the_package_depends_on_dovecot_and_ships_the_binary_and_units() {
    let root = Root::new();
    let deb = build_deb(&root);
    let name = deb.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("fugu_") && name.ends_with(".deb"),
        "{name}"
    );

    let control = run(Command::new("dpkg-deb").arg("-f").arg(&deb));
    let masked: String = control
        .lines()
        .map(|l| match l.split_once(": ") {
            Some(("Version" | "Installed-Size" | "Architecture", _)) => {
                format!("{}: *\n", l.split_once(':').unwrap().0)
            }
            _ => format!("{l}\n"),
        })
        .collect();
    golden("deb/control", &masked);

    // Permissions, owners and paths; sizes and dates are the build's.
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let listing: String = contents
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}\n", f[0], f[1], f[5])
        })
        .collect();
    golden("deb/contents", &listing);

    // The packaged binary is this build's fugu and runs.
    let x = root.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
    let help = run(Command::new(x.join("usr/bin/fugu")).arg("--help"));
    assert!(help.contains("quickstart"), "{help}");
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let root = Root::new();
    let deb = build_deb(&root);
    require_program("systemd-analyze", "systemd");
    let x = root.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
    // verify checks that ExecStart binaries exist: point them at the extracted one.
    let units = root.join("units");
    std::fs::create_dir_all(&units).unwrap();
    let fugu = x.join("usr/bin/fugu");
    for unit in UNITS {
        let text = std::fs::read_to_string(x.join("lib/systemd/system").join(unit)).unwrap();
        std::fs::write(
            units.join(unit),
            text.replace("/usr/bin/fugu", fugu.to_str().unwrap()),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(UNITS.map(|u| units.join(u)))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 even for unknown keys and bad values: any message is a failure.
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// `key=value` lines of a unit, comments dropped.
fn directives(unit: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("image/debian").join(unit)).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn get<'a>(d: &'a [(String, String)], key: &str) -> Option<&'a str> {
    d.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn every_unit_is_sandboxed_and_holds_only_the_capabilities_it_needs() {
    for unit in UNITS {
        let d = directives(unit);
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
        ] {
            assert_eq!(get(&d, key), Some(value), "{unit}: {key}");
        }
        assert!(
            get(&d, "ReadWritePaths").is_some(),
            "{unit}: ReadWritePaths"
        );
    }
    // The mta and the console never hold root: only the right to bind low ports.
    for unit in ["fugu-smtpd.service", "fugu-admin.service"] {
        let d = directives(unit);
        assert_eq!(get(&d, "User"), Some("fugu"), "{unit}");
        assert_eq!(
            get(&d, "CapabilityBoundingSet"),
            Some("CAP_NET_BIND_SERVICE"),
            "{unit}"
        );
        assert_eq!(get(&d, "AmbientCapabilities"), Some("CAP_NET_BIND_SERVICE"));
    }
    let d = directives("fugu-provision.service");
    assert_eq!(get(&d, "User"), None, "the provisioner runs as root");
    let caps = get(&d, "CapabilityBoundingSet").unwrap();
    for absent in [
        "CAP_SYS_ADMIN",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_MODULE",
        "CAP_SETUID",
    ] {
        assert!(!caps.contains(absent), "provisioner holds {absent}: {caps}");
    }
    assert!(
        get(&d, "ReadWritePaths")
            .unwrap()
            .starts_with("/etc/fugu/generated ")
    );
}

#[test]
fn maintainer_scripts_are_clean_shell_and_use_the_debian_helpers() {
    let shellcheck = require_program("shellcheck", "shellcheck");
    let dir = repo().join("image/debian");
    for script in ["postinst", "prerm", "postrm"] {
        let path = dir.join(script);
        run(Command::new("sh").arg("-n").arg(&path));
        run(Command::new(&shellcheck).arg("--shell=sh").arg(&path));
        let text = std::fs::read_to_string(&path).unwrap();
        // policy-rc.d is honoured by deb-systemd-invoke, not by systemctl.
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(
                !line.contains("systemctl"),
                "{script} calls systemctl: {line}"
            );
        }
    }
    let postinst = std::fs::read_to_string(dir.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system"));
    assert!(postinst.contains("deb-systemd-helper enable"));
    assert!(postinst.contains("deb-systemd-invoke"));
    run(Command::new(&shellcheck).arg(repo().join("image/build-deb")));
}

#[test]
fn every_unit_command_line_parses_with_this_fugu() {
    for unit in UNITS {
        for (key, value) in directives(unit) {
            let Some(args) = value.strip_prefix("/usr/bin/fugu ") else {
                continue;
            };
            // clap parses left to right: an unknown flag or a bad value fails before --help.
            let out = Command::new(bin())
                .args(args.split_whitespace())
                .arg("--help")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{unit} {key}: `fugu {args}` does not parse:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn the_image_and_backup_scripts_are_clean_shell() {
    let shellcheck = require_program("shellcheck", "shellcheck");
    for script in [
        "image/build-deb",
        "image/build-image",
        "image/fugu-backup",
        "image/appliance/fugu-firstboot",
        "image/appliance/fugu-report.sh",
        "scripts/slow/image",
    ] {
        let out = Command::new(&shellcheck)
            .arg(repo().join(script))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
