//! Golden files for every rendered output. `BLESS=1 cargo nextest run -p provisioner golden`
//! rewrites them; review the diff.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use provisioner::{Config, Output, RenderedFile, render};

use crate::fixture;

fn golden_dir(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(variant)
}

fn bless() -> bool {
    std::env::var_os("BLESS").is_some_and(|v| v == "1")
}

/// Every file below `dir`, relative to it.
fn files_below(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out
}

/// Compares (or with BLESS=1 writes) each file's contents, plus a `FILES` listing of
/// mode, owner, group and output per path.
pub fn check(variant: &str, root: &Path, files: &[RenderedFile]) {
    let dir = golden_dir(variant);
    let mut listing = String::new();
    let mut expected = BTreeSet::new();
    let mut wanted: Vec<(PathBuf, String)> = Vec::new();
    for f in files {
        let rel = f.path.strip_prefix(root).unwrap().to_path_buf();
        let _ = writeln!(
            listing,
            "{:04o} {} {} {} {}",
            f.mode,
            f.owner.as_deref().unwrap_or("-"),
            f.group.as_deref().unwrap_or("-"),
            f.output,
            rel.display()
        );
        wanted.push((rel.clone(), f.contents.clone()));
        expected.insert(rel);
    }
    wanted.push((PathBuf::from("FILES"), listing));
    expected.insert(PathBuf::from("FILES"));
    if bless() {
        let _ = std::fs::remove_dir_all(&dir);
        for (rel, contents) in &wanted {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, contents).unwrap();
        }
        return;
    }
    let mut failures = Vec::new();
    for (rel, contents) in &wanted {
        let golden = std::fs::read_to_string(dir.join(rel)).unwrap_or_default();
        if golden != *contents {
            failures.push(format!(
                "{}:\n{}",
                rel.display(),
                similar::TextDiff::from_lines(&golden, contents)
                    .unified_diff()
                    .header("golden", "rendered")
            ));
        }
    }
    for extra in files_below(&dir).difference(&expected) {
        failures.push(format!(
            "{}: golden file no longer rendered",
            extra.display()
        ));
    }
    assert!(
        failures.is_empty(),
        "rendering differs from tests/golden/{variant} (BLESS=1 to accept):\n{}",
        failures.join("\n")
    );
}

pub fn box_config() -> Config {
    let mut config = Config {
        hostname: "mail.example.org".into(),
        ..Config::default()
    };
    // Both packet filters, whatever the build host.
    config.outputs = Output::ALL.into_iter().collect();
    config
}

#[test]
fn default_box_rendering_matches_golden_files() {
    let config = box_config();
    let files = render(&fixture::snapshot(), &config);
    check("default", &config.paths.root, &files);
}

#[test]
fn opensmtpd_rendering_leaves_out_fugu_extensions() {
    let config = Config {
        opensmtpd: true,
        outputs: [Output::Smtpd].into_iter().collect(),
        ..box_config()
    };
    let files = render(&fixture::snapshot(), &config);
    check("opensmtpd", &config.paths.root, &files);
    let smtpd = &files[0].contents;
    assert!(!smtpd.contains("dkim"), "{smtpd}");
}

#[test]
fn without_a_certificate_tls_is_off_everywhere() {
    let mut snapshot = fixture::snapshot();
    snapshot.certificates.clear();
    let config = Config {
        outputs: [Output::Dovecot, Output::Smtpd, Output::Tls]
            .into_iter()
            .collect(),
        ..box_config()
    };
    let files = render(&snapshot, &config);
    check("no-certificate", &config.paths.root, &files);
}

#[test]
fn test_root_rendering_matches_golden_files() {
    let config = Config {
        hostname: "mail.example.org".into(),
        ..Config::under_root(Path::new("/srv/fugu"))
    };
    let files = render(&fixture::snapshot(), &config);
    check("under-root", &config.paths.root, &files);
}
