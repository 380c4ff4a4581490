//! Replays every committed seed (and any corpus entry or crash artifact present) through the
//! target bodies on the stable toolchain, without libFuzzer: `cd fuzz && cargo test`.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [root.join("corpus").join(target), root.join("artifacts").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        for p in files {
            let data = match std::fs::read(&p) {
                Ok(d) => d,
                // A libFuzzer run on this corpus replaced it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", p.display()),
            };
            eprintln!("{target}: {}", p.display());
            f(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no inputs for {target}");
}

#[test]
fn viewer_stream() {
    replay("viewer_stream", listo_fuzz::targets::viewer_stream);
}

#[test]
fn upstream_stream() {
    replay("upstream_stream", listo_fuzz::targets::upstream_stream);
}

#[test]
fn playlist() {
    replay("playlist", listo_fuzz::targets::playlist);
}

#[test]
fn control_json() {
    replay("control_json", listo_fuzz::targets::control_json);
}

#[test]
fn node_api() {
    replay("node_api", listo_fuzz::targets::node_api);
}

/// Replays one input: `LISTO_FUZZ_TARGET=viewer_stream LISTO_FUZZ_INPUT=path cargo test one -- --ignored`
/// (add `LISTO_FUZZ_TRACE=1` to see every host action).
#[test]
#[ignore]
fn one() {
    let target = std::env::var("LISTO_FUZZ_TARGET").expect("LISTO_FUZZ_TARGET");
    let data = std::fs::read(std::env::var("LISTO_FUZZ_INPUT").expect("LISTO_FUZZ_INPUT")).unwrap();
    let f: fn(&[u8]) = match target.as_str() {
        "viewer_stream" => listo_fuzz::targets::viewer_stream,
        "upstream_stream" => listo_fuzz::targets::upstream_stream,
        "playlist" => listo_fuzz::targets::playlist,
        "control_json" => listo_fuzz::targets::control_json,
        "node_api" => listo_fuzz::targets::node_api,
        t => panic!("unknown target {t}"),
    };
    f(&data);
}

/// Times every target over its corpus (seeds and whatever libFuzzer added), `LISTO_FUZZ_ROUNDS`
/// times (default 20): `cargo test --release --test replay bench -- --ignored --nocapture`
/// (run it under `perf record -g` to see where a target spends its time).
#[test]
#[ignore]
fn bench() {
    let rounds: usize = std::env::var("LISTO_FUZZ_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let only = std::env::var("LISTO_FUZZ_TARGET").ok();
    let targets: [(&str, fn(&[u8])); 5] = [
        ("viewer_stream", listo_fuzz::targets::viewer_stream),
        ("upstream_stream", listo_fuzz::targets::upstream_stream),
        ("playlist", listo_fuzz::targets::playlist),
        ("control_json", listo_fuzz::targets::control_json),
        ("node_api", listo_fuzz::targets::node_api),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, f) in targets {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(root.join("corpus").join(name)) else { continue };
        let inputs: Vec<Vec<u8>> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).map(|p| std::fs::read(p).unwrap()).collect();
        let t0 = std::time::Instant::now();
        for _ in 0..rounds {
            for d in &inputs {
                f(d);
            }
        }
        let n = rounds * inputs.len();
        let dt = t0.elapsed().as_secs_f64();
        eprintln!("{name}: {n} execs in {dt:.2} s = {:.0} exec/s ({} inputs)", n as f64 / dt, inputs.len());
    }
}
