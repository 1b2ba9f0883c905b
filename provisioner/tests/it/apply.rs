//! Apply: atomic, idempotent, reloads only what changed, failures reported and retried.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use provisioner::{Config, Output, RenderedFile, apply, run_once};
use store::{DomainName, EmailAddress, NewUser, Store};

use crate::fixture;

pub async fn store_with_users(dir: &Path, users: &[(&str, &str)]) -> Store {
    let store = Store::open(&dir.join("fugu.db")).await.unwrap();
    for (address, hash) in users {
        let address = EmailAddress::parse(address).unwrap();
        if store.domain(address.domain()).await.unwrap().is_none() {
            store.add_domain(address.domain(), "").await.unwrap();
        }
        store
            .add_user(&NewUser {
                address,
                password_hash: hash.to_string(),
                display_name: String::new(),
                quota_bytes: 0,
            })
            .await
            .unwrap();
    }
    store
}

fn file(config: &Config, rel: &str, contents: &str) -> RenderedFile {
    RenderedFile {
        output: Output::Dovecot,
        path: config.paths.root.join(rel),
        contents: contents.to_string(),
        mode: 0o640,
        owner: None,
        group: None,
    }
}

fn inode(path: &Path) -> (u64, i64) {
    let m = std::fs::metadata(path).unwrap();
    (m.ino(), m.mtime_nsec())
}

fn temp_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".fugu-tmp.")
            {
                found.push(p);
            }
        }
    }
    found
}

#[tokio::test]
async fn second_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_users(dir.path(), &[("alice@example.org", fixture::ARGON2ID)]).await;
    let config = Config::under_root(dir.path());

    let first = run_once(&store, &config, false).await.unwrap();
    assert!(
        first.written.contains(&config.paths.dovecot_passwd),
        "{first:?}"
    );
    assert!(
        first.written.contains(&config.paths.smtpd_conf),
        "{first:?}"
    );
    let before = inode(&config.paths.dovecot_passwd);

    let second = run_once(&store, &config, false).await.unwrap();
    assert_eq!(second.written, Vec::<PathBuf>::new());
    assert!(second.changed.is_empty(), "{second:?}");
    assert_eq!(second.unchanged, first.written.len());
    assert_eq!(inode(&config.paths.dovecot_passwd), before);
}

#[tokio::test]
async fn a_password_change_rewrites_only_the_passwd_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_users(dir.path(), &[("alice@example.org", fixture::ARGON2ID)]).await;
    let config = Config::under_root(dir.path());
    run_once(&store, &config, false).await.unwrap();

    let alice = EmailAddress::parse("alice@example.org").unwrap();
    store
        .set_password_hash(&alice, fixture::BCRYPT)
        .await
        .unwrap();
    let report = run_once(&store, &config, false).await.unwrap();
    assert_eq!(report.written, vec![config.paths.dovecot_passwd.clone()]);
    assert_eq!(
        report.changed.iter().collect::<Vec<_>>(),
        vec![&Output::Dovecot]
    );
    let passwd = std::fs::read_to_string(&config.paths.dovecot_passwd).unwrap();
    assert!(
        passwd.starts_with("alice@example.org:{BLF-CRYPT}$2b$10$"),
        "{passwd}"
    );
}

#[tokio::test]
async fn dry_run_shows_a_diff_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_users(dir.path(), &[("alice@example.org", fixture::ARGON2ID)]).await;
    let config = Config::under_root(dir.path());
    run_once(&store, &config, false).await.unwrap();
    let before = std::fs::read_to_string(&config.paths.dovecot_passwd).unwrap();

    let domain = DomainName::parse("example.org").unwrap();
    store.set_domain_active(&domain, false).await.unwrap();
    let report = run_once(&store, &config, true).await.unwrap();

    assert!(report.dry_run);
    let passwd = config.paths.dovecot_passwd.display().to_string();
    assert!(
        report
            .diff
            .contains(&format!("--- {passwd}\n+++ {passwd}\n")),
        "{}",
        report.diff
    );
    assert!(
        report.diff.contains("\n-alice@example.org:{ARGON2ID}"),
        "{}",
        report.diff
    );
    assert_eq!(
        std::fs::read_to_string(&config.paths.dovecot_passwd).unwrap(),
        before
    );
}

#[test]
fn files_no_longer_rendered_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::under_root(dir.path());
    let old_key = file(&config, "dovecot/old", "retired\n");
    apply(
        &[file(&config, "dovecot/kept", "a\n"), old_key.clone()],
        &config,
    )
    .unwrap();
    assert!(old_key.path.exists());

    let report = apply(&[file(&config, "dovecot/kept", "a\n")], &config).unwrap();
    assert_eq!(report.removed, vec![old_key.path.clone()]);
    assert!(!old_key.path.exists());
}

#[test]
fn refuses_paths_outside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::under_root(dir.path());
    let escape = file(&config, "../escaped", "x\n");
    let err = apply(&[escape], &config).unwrap_err();
    assert!(err.to_string().contains("outside the output root"), "{err}");
    assert!(!dir.path().join("escaped").exists());
}

#[test]
fn a_failure_before_the_renames_leaves_every_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::under_root(dir.path());
    let a = file(&config, "dovecot/a", "old a\n");
    let b = file(&config, "nft/b", "old b\n");
    apply(&[a.clone(), b.clone()], &config).unwrap();

    // The second file's directory becomes a plain file: its temp file cannot be created.
    std::fs::remove_dir_all(config.paths.root.join("nft")).unwrap();
    std::fs::write(config.paths.root.join("nft"), "in the way").unwrap();
    let new_a = RenderedFile {
        contents: "new a\n".into(),
        ..a.clone()
    };
    let new_b = RenderedFile {
        contents: "new b\n".into(),
        ..b
    };
    let err = apply(&[new_a, new_b], &config).unwrap_err();
    assert!(err.to_string().contains("nft"), "{err}");

    assert_eq!(std::fs::read_to_string(&a.path).unwrap(), "old a\n");
    assert_eq!(temp_files_under(&config.paths.root), Vec::<PathBuf>::new());
}

#[test]
fn mode_is_set_and_a_mode_change_alone_rewrites_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::under_root(dir.path());
    let key = RenderedFile {
        mode: 0o400,
        ..file(&config, "dkim/example.org/s1.key", "KEY\n")
    };
    apply(std::slice::from_ref(&key), &config).unwrap();
    assert_eq!(std::fs::metadata(&key.path).unwrap().mode() & 0o7777, 0o400);

    let relaxed = RenderedFile { mode: 0o440, ..key };
    let report = apply(std::slice::from_ref(&relaxed), &config).unwrap();
    assert_eq!(report.written, vec![relaxed.path.clone()]);
    assert_eq!(
        std::fs::metadata(&relaxed.path).unwrap().mode() & 0o7777,
        0o440
    );
}

#[test]
fn reloads_run_only_for_changed_outputs_and_failures_are_retried_until_they_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("reloads.log");
    let mut config = Config::under_root(dir.path());
    let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    config.reload = BTreeMap::from([
        (
            Output::Dovecot,
            vec![sh(&format!("echo dovecot >> {}", log.display()))],
        ),
        (Output::Smtpd, vec![sh("echo 'smtpd is down' >&2; exit 3")]),
    ]);
    let dovecot = file(&config, "dovecot/passwd", "a\n");
    let smtpd = RenderedFile {
        output: Output::Smtpd,
        ..file(&config, "smtpd.conf", "x\n")
    };

    let first = apply(&[dovecot.clone(), smtpd.clone()], &config).unwrap();
    assert!(!first.is_success());
    let failed: Vec<_> = first.failed_reloads().collect();
    assert_eq!(failed.len(), 1, "{first:?}");
    assert_eq!(
        (failed[0].output, failed[0].status),
        (Output::Smtpd, Some(3))
    );
    assert_eq!(failed[0].stderr.trim(), "smtpd is down");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "dovecot\n");

    // Nothing changed, but the failed reload is retried; Dovecot's is not run again.
    let second = apply(&[dovecot.clone(), smtpd.clone()], &config).unwrap();
    assert_eq!(second.written, Vec::<PathBuf>::new());
    assert_eq!(second.reloads.len(), 1, "{second:?}");
    assert_eq!(second.reloads[0].output, Output::Smtpd);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "dovecot\n");

    config.reload.insert(Output::Smtpd, vec![sh("true")]);
    let third = apply(&[dovecot.clone(), smtpd.clone()], &config).unwrap();
    assert!(third.is_success(), "{third:?}");
    assert_eq!(third.reloads.len(), 1);
    let fourth = apply(&[dovecot, smtpd], &config).unwrap();
    assert_eq!(fourth.reloads, vec![]);
}

/// Not a test on its own: the child process `a_crash_mid_apply_never_leaves_a_truncated_file`
/// kills. Applies two large file sets in turn, forever.
#[test]
#[ignore = "run by a_crash_mid_apply_never_leaves_a_truncated_file"]
fn crash_child_applies_forever() {
    let Some(root) = std::env::var_os("FUGU_CRASH_ROOT") else {
        return;
    };
    let config = Config::under_root(Path::new(&root));
    let sets = [crash_set(&config, 'a'), crash_set(&config, 'b')];
    for i in 0.. {
        apply(&sets[i % 2], &config).unwrap();
    }
}

fn crash_set(config: &Config, fill: char) -> Vec<RenderedFile> {
    (0..40)
        .map(|i| {
            let body: String = std::iter::repeat_n(fill, 256 * 1024).collect();
            file(
                config,
                &format!("dovecot/f{i:02}"),
                &format!("{body}\nend {fill}\n"),
            )
        })
        .collect()
}

#[test]
fn a_crash_mid_apply_never_leaves_a_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::under_root(dir.path());
    let valid: Vec<String> = ['a', 'b']
        .iter()
        .map(|c| crash_set(&config, *c)[0].contents.clone())
        .collect();
    for round in 0..6u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "apply::crash_child_applies_forever",
                "--exact",
                "--ignored",
                "--quiet",
            ])
            .env("FUGU_CRASH_ROOT", dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Once a first whole set is on disk, every later kill lands mid-apply of the other.
        let first_set = config.paths.root.join("dovecot").join("f39");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !first_set.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(30 + round * 53));
        child.kill().unwrap(); // SIGKILL: no destructor, no cleanup
        child.wait().unwrap();
        let dovecot = config.paths.root.join("dovecot");
        // The child must have got as far as writing a whole set, or this checks nothing.
        let entries: Vec<_> = std::fs::read_dir(&dovecot)
            .unwrap_or_else(|e| panic!("round {round}: the child wrote nothing: {e}"))
            .collect();
        assert!(
            entries.len() >= 40,
            "round {round}: {} files",
            entries.len()
        );
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(".fugu-tmp.") {
                continue;
            }
            let contents = std::fs::read_to_string(&path).unwrap();
            assert!(
                valid.contains(&contents),
                "round {round}: {name} is neither the old nor the new file ({} bytes)",
                contents.len()
            );
        }
    }
    // The next apply sweeps what the killed runs left behind.
    apply(&crash_set(&config, 'a'), &config).unwrap();
    assert_eq!(temp_files_under(&config.paths.root), Vec::<PathBuf>::new());
}

#[test]
fn new_directories_are_0755_under_a_hardening_umask_and_existing_ones_keep_their_mode() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::under_root(dir.path());
    let own = config.paths.root.join("dkim");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o711)).unwrap();
    let key = RenderedFile {
        mode: 0o400,
        ..file(&config, "dkim/example.org/s1.key", "KEY\n")
    };
    let conf = file(&config, "dovecot/conf.d/10-auth.conf", "auth\n");

    // This test runs in a process of its own (nextest), so the umask it sets stays here.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let result = apply(&[key.clone(), conf.clone()], &config);
    nix::sys::stat::umask(old);
    result.unwrap();

    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    for d in [
        config.paths.root.join("dkim/example.org"),
        config.paths.root.join("dovecot"),
        config.paths.root.join("dovecot/conf.d"),
    ] {
        assert_eq!(mode(&d), 0o755, "{}", d.display());
    }
    assert_eq!(mode(&own), 0o711);
    assert_eq!(mode(&key.path), 0o400);
    assert_eq!(mode(&conf.path), 0o640);
}
