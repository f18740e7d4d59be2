//! `kvs_bench`: the Rust side of the benchmarks (`scripts/bench.sh` runs them
//! all and writes the report). A plain program (`harness = false`): one
//! subcommand per run, one JSON line on stdout with the figures.
//!
//! ```text
//! cargo bench --bench kvs_bench -- relay --impl raw|api [--mode latency|throughput]
//!       --endpoint ws://127.0.0.1:PORT --arn ARN [--rounds R --warmup W | --messages N]
//! cargo bench --bench kvs_bench -- connect [--iterations K]
//! cargo bench --bench kvs_bench -- scale --endpoint E --arns-file F [--sockets N]
//!       [--viewers-per-channel 9] [--seconds S] [--server-pid PID] [--label NAME]
//! cargo bench --bench kvs_bench -- scale-server [--exit-after S]
//! ```
//!
//! `relay` and `scale` talk to an emulator (or the `scale-server` baseline)
//! that is already running; `connect` starts its own emulators in-process (plain
//! and TLS with SigV4). Everything binds 127.0.0.1 and stops by itself.

mod common;
mod connect;
mod relay;
mod scale;

use std::process::ExitCode;

const USAGE: &str = "usage: kvs_bench relay|connect|scale|scale-server [--options]; see benches/kvs_bench/main.rs";

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; it means nothing here.
    let argv: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    // Without a subcommand (plain `cargo bench`, or `cargo test --benches`,
    // which passes harness flags) there is nothing to run: the benchmarks need
    // the processes scripts/bench.sh starts.
    let Some(command) = argv.first().filter(|a| !a.starts_with("--")) else {
        eprintln!("kvs_bench: nothing to run without a subcommand; use scripts/bench.sh\n{USAGE}");
        return ExitCode::SUCCESS;
    };
    let args = common::Args::parse(&argv[1..]);
    let result = match command.as_str() {
        "relay" => relay::run(&args),
        "connect" => connect::run(&args),
        "scale" => scale::run(&args),
        "scale-server" => scale::serve(&args),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => Err(format!("unknown command {other:?}; {USAGE}").into()),
    };
    match result {
        Ok(serde_json::Value::Null) => ExitCode::SUCCESS,
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kvs_bench {command}: {error}");
            ExitCode::FAILURE
        }
    }
}
