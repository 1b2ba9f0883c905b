//! The OpenBSD kit in `image/openbsd/`. It cannot boot here, so it is linted (`sh -n`,
//! shellcheck as ksh) and checked against the real binary and provisioner: every rc.d
//! script's command line parses with this build's `fugu`, and the pf snippet loads the
//! anchor the provisioner writes.

use std::path::{Path, PathBuf};
use std::process::Command;

use fugu_tests::fugu::{Root, bin};
use fugu_tests::process::require_program;

const SCRIPTS: [(&str, &str); 3] = [
    ("fugu_smtpd", "smtpd"),
    ("fugu_admin", "admin"),
    ("fugu_provision", "provision"),
];

fn kit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("image/openbsd")
}

/// The value of `name="…"` in an rc.d script.
fn var(text: &str, name: &str) -> String {
    let prefix = format!("{name}=\"");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {name} in script"))
        .to_string()
}

#[test]
fn rc_scripts_are_clean_ksh_in_rc_subr_style() {
    let shellcheck = require_program("shellcheck", "shellcheck");
    for (script, _) in SCRIPTS {
        let path = kit().join(script);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("#!/bin/ksh\n"), "{script}");
        assert!(text.contains("\n. /etc/rc.d/rc.subr\n"), "{script}");
        assert!(
            text.contains("\nrc_bg=YES\n"),
            "{script}: fugu does not fork"
        );
        assert!(text.trim_end().ends_with("rc_cmd \"$1\""), "{script}");
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "{script}: sh -n failed");
        // rc.subr is OpenBSD's (SC1091); daemon* variables are read by it (SC2034).
        let out = Command::new(&shellcheck)
            .args(["--shell=ksh", "-e", "SC1091,SC2034"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = Command::new(&shellcheck)
        .arg(kit().join("install.site"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.site:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn every_rc_script_command_line_parses_with_this_fugu() {
    for (script, sub) in SCRIPTS {
        let text = std::fs::read_to_string(kit().join(script)).unwrap();
        assert_eq!(var(&text, "daemon"), format!("/usr/local/bin/fugu {sub}"));
        let flags = var(&text, "daemon_flags");
        // clap parses left to right: an unknown flag or a bad value fails before --help.
        let out = Command::new(bin())
            .arg(sub)
            .args(flags.split_whitespace())
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: `fugu {sub} {flags}` does not parse:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_pf_snippet_loads_the_anchor_the_provisioner_writes() {
    let snippet = std::fs::read_to_string(kit().join("pf.conf.fugu")).unwrap();
    assert!(snippet.contains("\nanchor \"fugu\"\n"));
    let load = "load anchor \"fugu\" from \"/etc/fugu/generated/pf/fugu.anchor\"";
    assert!(snippet.contains(load), "{snippet}");

    // The provisioner's own pf output, rendered into a test root, names the same file
    // relative to its root and the tables the snippet's comment lists.
    let root = Root::new();
    root.fugu(&["domain", "add", "example.org"]).success();
    root.provision_once("hostname = \"mail.example.org\"\n[provision]\noutputs = [\"pf\"]\n");
    let r = root.path().to_str().unwrap();
    let anchor = std::fs::read_to_string(root.join("generated/pf/fugu.anchor")).unwrap();
    assert!(
        anchor.contains(&format!(
            "load anchor \"fugu\" from \"{r}/generated/pf/fugu.anchor\""
        )),
        "{anchor}"
    );
    for table in ["fugu_allow", "fugu_block", "fugu_bruteforce"] {
        assert!(anchor.contains(&format!("table <{table}>")), "{anchor}");
        assert!(snippet.contains(table), "snippet does not mention {table}");
    }
}

#[test]
fn the_login_classes_are_named_after_the_rc_scripts() {
    let text = std::fs::read_to_string(kit().join("login.conf.fugu")).unwrap();
    for (script, _) in SCRIPTS {
        assert!(
            text.contains(&format!("\n{script}:\\\n")),
            "no login class {script}"
        );
    }
    // Every line of an entry but its last continues with `\`; the last inherits `daemon`.
    let mut entries: Vec<Vec<&str>> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if line.starts_with('\t') {
            entries.last_mut().unwrap().push(line);
        } else {
            entries.push(vec![line]);
        }
    }
    assert_eq!(entries.len(), 3);
    for entry in entries {
        let (last, rest) = entry.split_last().unwrap();
        assert!(rest.iter().all(|l| l.ends_with('\\')), "{entry:?}");
        assert_eq!(*last, "\t:tc=daemon:", "{entry:?}");
    }
}
