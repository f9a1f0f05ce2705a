//! What the sandbox costs: the image pre-processing stage run natively
//! (the same Rust code, compiled for the host) against the same code in the
//! sandbox, with and without fuel metering, warm and cold.
//!
//! Run: `cargo bench -p tally-sandbox --bench sandbox --profile dev`
//! (reuses the test build) or plain `cargo bench -p tally-sandbox`.
//! Prints medians and ratios to native, measured in this one run.

use std::time::{Duration, Instant};

use tally_package::Package;
use tally_sandbox::{RunRequest, Sandbox, SandboxConfig};
use tally_test_artifacts::pkg::Pkg;

const SAMPLE_PNG: &[u8] = include_bytes!("../../../manifests/image-stats/sample.png");
const ARGS: &[&str] = &["--width", "224", "--height", "224"];

fn package(guest: &str) -> Package {
    let args: Vec<String> = ARGS.iter().map(|a| format!("{a:?}")).collect();
    Pkg::new()
        .guest_stage(guest, &format!("args = [{}]", args.join(", ")))
        .build()
}

fn median(mut f: impl FnMut(), iters: usize) -> Duration {
    f(); // warm-up
    let mut times: Vec<Duration> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[iters / 2]
}

fn main() {
    let iters: usize = std::env::var("TALLY_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let pkg = package("preprocess");
    let echo = package("echo");
    let opts =
        tally_image_preprocess::Options::from_args(ARGS.iter().map(|s| s.to_string())).unwrap();

    let native = median(
        || {
            std::hint::black_box(tally_image_preprocess::preprocess(SAMPLE_PNG, &opts).unwrap());
        },
        iters,
    );
    let run = |s: &Sandbox| {
        let r = s.run(&pkg, &RunRequest::new(SAMPLE_PNG)).unwrap();
        assert!(r.claim.outcome.is_ok());
    };
    let metered = Sandbox::new(SandboxConfig::default().pooling(true)).unwrap();
    let warm_fuel = median(|| run(&metered), iters);
    let on_demand = Sandbox::new(SandboxConfig::default()).unwrap();
    let warm_on_demand = median(|| run(&on_demand), iters);
    let unmetered = Sandbox::new(SandboxConfig::default().pooling(true).unmetered(true)).unwrap();
    let warm_nofuel = median(|| run(&unmetered), iters);

    let fixed = median(
        || {
            metered.run(&echo, &RunRequest::new(SAMPLE_PNG)).unwrap();
        },
        iters,
    );
    let cache = tempfile::tempdir().unwrap();
    let cold_iters = iters.min(5);
    let cold = median(
        || run(&Sandbox::new(SandboxConfig::default()).unwrap()),
        cold_iters,
    );
    run(&Sandbox::new(SandboxConfig::default().cache_dir(cache.path())).unwrap());
    let disk = median(
        || run(&Sandbox::new(SandboxConfig::default().cache_dir(cache.path())).unwrap()),
        cold_iters,
    );

    let fuel = metered
        .run(&pkg, &RunRequest::new(SAMPLE_PNG))
        .unwrap()
        .claim
        .fuel_consumed;
    let ratio = |d: Duration| d.as_secs_f64() / native.as_secs_f64();
    println!("image pre-processing (PNG 64x48 -> f32 [1,3,224,224]), median of {iters}");
    println!("{:<44} {:>10} {:>9}", "configuration", "time", "x native");
    for (name, d) in [
        ("native (same Rust code, host target)", native),
        ("sandbox, warm (pooling), fuel metering on", warm_fuel),
        ("sandbox, warm (pooling), fuel metering off", warm_nofuel),
        ("sandbox, warm, on-demand allocator", warm_on_demand),
        ("sandbox, new engine, disk-cached module", disk),
        ("(fixed cost: an `echo` stage, warm, pooled)", fixed),
        ("sandbox, new engine, cold compile", cold),
    ] {
        println!(
            "{name:<44} {:>8.2}ms {:>8.2}x",
            d.as_secs_f64() * 1e3,
            ratio(d)
        );
    }
    println!(
        "fuel metering overhead: {:.1}%",
        (warm_fuel.as_secs_f64() / warm_nofuel.as_secs_f64() - 1.0) * 100.0
    );
    println!("fuel per run: {fuel}");
}
