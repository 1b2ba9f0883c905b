//! Link-time settings of the `fugu` binary.

use std::path::Path;

fn main() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=fugu.order");
    // Relative relocations packed as DT_RELR (glibc 2.36, binutils 2.38): the 45,000
    // pointer fix-ups of a position-independent fugu take a few KiB instead of 1.1 MiB
    // that the loader reads at every start and that stays resident.
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // The functions the SMTP server runs (scripts/symbol-order), placed next to each other:
    // code is mapped 64 KiB at a time, and spread over the whole text the server's 1.5 MiB
    // of it kept about 7 MiB resident. The names are those of a release build on x86_64
    // Linux, where rustc links with its own lld (the only linker here that takes the list).
    // Names that no longer exist are skipped.
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("fugu.order");
    if var("PROFILE") == "release" && var("TARGET") == "x86_64-unknown-linux-gnu" && order.exists()
    {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
