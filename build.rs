//! Link-time settings for the `warden` binary.
//!
//! On Linux with glibc the binary is linked with packed relative relocations
//! (`DT_RELR`, binutils ≥ 2.38, glibc ≥ 2.36: Debian 12 and the distroless
//! `cc-debian12` runtime image). A position-independent Rust binary carries
//! about a megabyte of `R_X86_64_RELATIVE` entries that the loader reads once
//! at start-up and that then stay resident; packed, they take a few kilobytes.
//! That megabyte is most of the gap between warden's idle memory and its 15 MiB
//! target (`warden-dev bench --scenarios startup`). The binary stays PIE, so ASLR
//! is unchanged. `WARDEN_NO_RELR=1` turns it off for an older toolchain.

fn main() {
    println!("cargo:rerun-if-env-changed=WARDEN_NO_RELR");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" && std::env::var_os("WARDEN_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
