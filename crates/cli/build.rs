//! Builds the LD_PRELOAD interposer (crates/preload) and embeds it in the `netblame` binary, so
//! that an installed netblame (`cargo install --path crates/cli`) finds it with nothing else to
//! set. The nested cargo uses its own target directory under OUT_DIR and never the network.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest_dir.join("../..");
    for dir in ["crates/preload", "crates/instrument"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let target_dir = out.join("preload-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--offline",
        "-p",
        "netblame-preload",
        "--manifest-path",
    ])
    .arg(workspace.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    if release {
        cmd.arg("--release");
    }
    // Do not inherit the outer build's flags for a different crate type (e.g. coverage).
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the interposer");
    assert!(status.success(), "building netblame-preload failed");
    let so = target_dir
        .join(if release { "release" } else { "debug" })
        .join("libnetblame_preload.so");
    std::fs::copy(&so, out.join("libnetblame_preload.so")).expect("copying the interposer");
}
