//! Child processes that die with the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Finds a program on PATH (and the sbin directories, which a non-login PATH may lack),
/// or panics naming the Debian package that provides it.
pub fn require_program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is not installed: run scripts/install-test-deps (Debian package {package})");
}

/// A spawned process, killed (and reaped) on drop. Its stdout and stderr go to a log
/// file so a failing test can show what the peer said.
pub struct Child {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Child {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Child {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Child {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited with {status}; its log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Sends a signal (SIGTERM = 15, SIGKILL = 9, SIGHUP = 1) through kill(1).
    pub fn signal(&self, sig: i32) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `read()` (a log file's text, say) contains `needle`; panics after 30 s
/// with the text. Log lines trail the effects they describe (a delivered file appears
/// before the scheduler logs it), so tests wait for them instead of reading once.
pub fn wait_for_text(read: impl Fn() -> String, needle: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let text = read();
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{needle:?} never appeared:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
