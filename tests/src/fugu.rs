//! The built `fugu` binary and a temp root to run it in.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `fugu smtpd -d -f CONF --spool SPOOL`, to be spawned as a [`crate::Child`].
pub fn smtpd_command(conf: &Path, spool: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(["smtpd", "-d", "-f"])
        .arg(conf)
        .arg("--spool")
        .arg(spool);
    cmd
}

/// A one-listener smtpd.conf in `root`: `listen on 127.0.0.1 port PORT`, local user
/// `bob` (owned by root, home in the root) and mail for `domain` to `action`, whose
/// text may name `{root}` (e.g. `maildir "{root}/mail/%{rcpt.user}"`).
pub fn one_user_conf(root: &Root, port: u16, domain: &str, action: &str) -> PathBuf {
    let r = root.path().display().to_string();
    root.write("users", &format!("bob 0:0:{r}\n"));
    root.write(
        "smtpd.conf",
        &format!(
            "table users file:{r}/users\n\
             listen on 127.0.0.1 port {port}\n\
             action \"a\" {} userbase <users>\n\
             match from any for domain \"{domain}\" action \"a\"\n",
            action.replace("{root}", &r)
        ),
    )
}

/// The user the tests run as: virtual recipients' maildirs belong to it.
pub fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name
}

/// The `fugu` binary of this build: `target/<profile>/fugu`, next to the test's own
/// `deps/` directory. `cargo test --workspace` / `cargo nextest run --workspace` build it.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FUGU_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("fugu");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build` (the test command builds the workspace)",
        bin.display()
    );
    bin
}

/// A temp directory that holds one test's database, configs, spool and mail.
pub struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Root {
        // Under target/ rather than /tmp: some peers refuse world-writable parents.
        let base = bin()
            .parent()
            .map(|p| p.join("e2e-roots"))
            .expect("target dir");
        std::fs::create_dir_all(&base).expect("create e2e-roots");
        Root {
            dir: tempfile::Builder::new()
                .prefix("t")
                .tempdir_in(base)
                .expect("temp root"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn db(&self) -> PathBuf {
        self.join("fugu.db")
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// Makes `vmail/` the mailbox home of the vmail user (created if missing) in the
    /// appliance's settings; the root is opened to Dovecot's unprivileged processes.
    pub fn set_up_vmail(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, gid) = crate::dovecot::ensure_vmail();
        let vmail = self.join("vmail");
        std::fs::create_dir(&vmail).unwrap();
        std::os::unix::fs::chown(&vmail, Some(uid), Some(gid)).unwrap();
        for (k, v) in [
            ("vmail_uid", uid.to_string()),
            ("vmail_gid", gid.to_string()),
            ("vmail_home", vmail.display().to_string()),
        ] {
            self.fugu(&["setting", "set", k, &v]).success();
        }
    }

    /// `fugu provision --once` into this root, with `settings` as its `fugu.toml`.
    pub fn provision_once(&self, settings: &str) {
        let conf = self.write("fugu.toml", settings);
        self.fugu(&[
            "provision",
            "--once",
            "--root",
            self.path().to_str().unwrap(),
            "--config",
            conf.to_str().unwrap(),
        ])
        .success();
    }

    /// Provisions `mx.example.org` listening on 127.0.0.1 with every port free; returns
    /// its SMTP and IMAP ports.
    pub fn provision_on_loopback(&self) -> (u16, u16) {
        let (smtp, imap) = (crate::free_port(), crate::free_port());
        let [submission, smtps, loopback, imaps, pop3, pop3s] =
            [(); 6].map(|()| crate::free_port());
        self.provision_once(&format!(
            "hostname = \"mx.example.org\"\nlisten = [\"127.0.0.1\"]\n[ports]\nsmtp = {smtp}\n\
             submission = {submission}\nsmtps = {smtps}\nloopback = {loopback}\nimap = {imap}\n\
             imaps = {imaps}\npop3 = {pop3}\npop3s = {pop3s}\n"
        ));
        (smtp, imap)
    }

    /// Runs `fugu ARGS…` to completion with `$FUGU_DB` pointing at this root's database.
    pub fn fugu(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("FUGU_DB", self.db())
            .current_dir(self.path());
        Run::from(cmd.output().expect("run fugu"))
    }

    /// Runs `fugu ARGS…` with `input` on standard input.
    pub fn fugu_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = Command::new(bin())
            .args(args)
            .env("FUGU_DB", self.db())
            .current_dir(self.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn fugu");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        Run::from(child.wait_with_output().expect("wait fugu"))
    }
}

impl Default for Root {
    fn default() -> Self {
        Root::new()
    }
}

/// The outcome of one command.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn success(&self) -> &str {
        assert!(
            self.ok,
            "expected success, got failure:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts failure with a one-line error containing `needle`.
    #[track_caller]
    pub fn fails_with(&self, needle: &str) {
        assert!(!self.ok, "expected failure, got success:\n{}", self.stdout);
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "error is not one line:\n{}",
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "error {:?} does not mention {needle:?}",
            self.stderr
        );
    }
}
