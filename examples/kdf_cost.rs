//! What opening an encrypted repository costs: Argon2id at 32 MiB for several pass counts, each
//! timed as `wqm` spends it (unwrapping a key object's master key), best and worst of five. The
//! measurement behind `KdfParams::DEFAULT` (docs/architecture.md, "Encryption").
//!
//!     cargo run --release --example kdf_cost

use std::time::Instant;

use wqm::crypto::{KdfParams, KeyLabel, KeyObject, MasterKey, Password};

fn main() {
    let master = MasterKey::generate().expect("the system's random numbers");
    let password = Password::new("a password");
    let label = KeyLabel {
        created: "2026-12-04T00:00:00Z".into(),
        host: "bench".into(),
        username: None,
    };
    println!("| m (MiB) | t | best (s) | worst (s) |");
    println!("|---|---|---|---|");
    for iterations in [4, 8, 16, 32] {
        let params = KdfParams {
            memory_kib: 32 * 1024,
            iterations,
            parallelism: 1,
        };
        let key = KeyObject::new(&master, &password, params, label.clone()).expect("a key");
        let times: Vec<f64> = (0..5)
            .map(|_| {
                let started = Instant::now();
                key.unwrap_master(&password).expect("it opens");
                started.elapsed().as_secs_f64()
            })
            .collect();
        let best = times.iter().copied().fold(f64::MAX, f64::min);
        let worst = times.iter().copied().fold(0.0, f64::max);
        println!("| 32 | {iterations} | {best:.3} | {worst:.3} |");
    }
}
