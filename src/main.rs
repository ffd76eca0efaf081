//! The `sluice` binary: command-line entry point of the broker.

fn main() {
    println!("sluice {}", env!("CARGO_PKG_VERSION"));
}
