//! Link-time settings of the `fugu` binary.

fn main() {
    // Relative relocations packed as DT_RELR (glibc 2.36, binutils 2.38): the 45,000
    // pointer fix-ups of a position-independent fugu take a few KiB instead of 1.1 MiB
    // that the loader reads at every start and that stays resident.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
