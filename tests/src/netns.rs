//! A private network namespace for one test: relay by MX always dials port 25 and the
//! libc resolver only asks port 53, so tests that need MX records run where they can
//! own those ports. The body runs on a fresh thread that has left the host's network
//! namespace; every process it spawns (unbound, Postfix, fugu, swaks) inherits it.

use std::process::Command;

/// Runs `body` in a new network namespace with only `lo` (up, so 127.0.0.0/8 works),
/// and returns its result; a panic in the body fails the calling test.
pub fn run<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): the tests need root or CAP_SYS_ADMIN");
        let status = Command::new(crate::require_program("ip", "iproute2"))
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run ip link set lo up");
        assert!(status.success(), "ip link set lo up failed");
        body()
    });
    match handle.join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Adds `ip` to `lo` inside the test's namespace. All of 127.0.0.0/8 already routes to
/// `lo`, but some programs (Postfix's `inet_interfaces`) only bind to an address that an
/// interface lists. Call only from inside [`run`].
pub fn add_loopback(ip: std::net::IpAddr) {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    let _ = Command::new(crate::require_program("ip", "iproute2"))
        .args(["addr", "add", &format!("{ip}/{prefix}"), "dev", "lo"])
        .stderr(std::process::Stdio::null())
        .status();
}
