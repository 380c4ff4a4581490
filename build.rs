//! Writes `listo.pc` (pkg-config) next to the libraries: `target/<profile>/listo.pc`, and a copy
//! in `OUT_DIR`. It describes the uninstalled build tree (headers in `include/`, libraries in
//! `target/<profile>/`); README "Use from C" shows how to install it elsewhere.
//!
//! `Libs.private` (what `liblisto.a` needs from the system) comes from asking rustc itself:
//! `--print native-static-libs` on an empty staticlib for the same target. If that probe fails
//! the usual list for the target OS is used. `tests/c_abi.rs` checks the result against the
//! real staticlib's `--print native-static-libs`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    // OUT_DIR is <target>/<profile>/build/listo-<hash>/out: three levels up is where cargo puts
    // liblisto.a / liblisto.so.
    let libdir = out.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(|| out.clone());
    let libs = native_static_libs(&out).unwrap_or_else(fallback_libs);
    let pc = format!(
        "prefix={prefix}\n\
         includedir=${{prefix}}/include\n\
         libdir={libdir}\n\
         \n\
         Name: listo\n\
         Description: {desc}\n\
         Version: {version}\n\
         Cflags: -I${{includedir}}\n\
         Libs: -L${{libdir}} -llisto\n\
         Libs.private: {libs}\n",
        prefix = manifest.display(),
        libdir = libdir.display(),
        desc = "LISTO live streaming cache node (sans-IO, C ABI)",
        version = env::var("CARGO_PKG_VERSION").unwrap_or_default(),
    );
    // Never fail the build over the .pc file: report and go on.
    for dir in [&out, &libdir] {
        if let Err(e) = fs::write(dir.join("listo.pc"), &pc) {
            println!("cargo:warning=could not write listo.pc in {}: {e}", dir.display());
        }
    }
}

/// Asks rustc what a staticlib for this target must be linked with.
fn native_static_libs(out: &Path) -> Option<String> {
    let rustc = env::var_os("RUSTC")?;
    let target = env::var("TARGET").ok()?;
    let src = out.join("listo_probe.rs");
    fs::write(&src, "").ok()?;
    let output = Command::new(rustc)
        .args(["--crate-name", "listo_probe", "--crate-type", "staticlib", "--edition", "2021"])
        .args(["--target", &target, "--print", "native-static-libs", "-o"])
        .arg(out.join("liblisto_probe.a"))
        .arg(&src)
        .output()
        .ok()?;
    let _ = fs::remove_file(out.join("liblisto_probe.a"));
    let text = String::from_utf8_lossy(&output.stderr);
    let line = text.lines().find_map(|l| l.split("native-static-libs:").nth(1))?;
    Some(line.trim().to_string()).filter(|s| !s.is_empty())
}

fn fallback_libs() -> String {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env_ = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    match (os.as_str(), env_.as_str()) {
        ("linux", "gnu") => "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc",
        ("linux", "musl") => "-lc",
        ("macos", _) | ("ios", _) => "-lSystem -lc -lm",
        _ => "-lpthread -lm -ldl -lc",
    }
    .to_string()
}
