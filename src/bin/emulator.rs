//! `kvs-signaling-emulator`: runs the local signaling service emulator.
//!
//! Prints the WebSocket endpoint as the first stdout line (`ws://HOST:PORT`), then
//! `channel NAME ARN` for each pre-created channel, and runs until killed or until
//! `--exit-after` elapses.

use kvs_signaling::emulator::{Emulator, EmulatorConfig};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
Usage: kvs-signaling-emulator [OPTIONS]

Local emulator of the Amazon Kinesis Video Streams WebRTC signaling service.
Prints `ws://HOST:PORT` as its first line, then `channel NAME ARN` per channel.

Options:
  --listen ADDR         address to bind (default 127.0.0.1:0, a free port)
  --channel NAME        create a channel at start (repeatable)
  --region REGION       region in channel ARNs (default us-west-2)
  --account ACCOUNT     account id in channel ARNs (default 123456789012)
  --max-viewers N       viewers allowed per channel (default 10)
  --message-ttl SECS    how long messages wait for an absent recipient (default 60)
  --max-frame-len BYTES longest inbound WebSocket frame (default 65536)
  --exit-after SECS     stop after this many seconds (default: run until killed)
  --verbose             log connections and routing to stderr
  --help                print this help
";

/// What the command line asks for.
struct Options {
    config: EmulatorConfig,
    exit_after: Option<Duration>,
}

fn parse_seconds(flag: &str, text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .ok_or_else(|| format!("{flag} expects a number of seconds, got {text:?}"))
}

fn parse_number(flag: &str, text: &str) -> Result<usize, String> {
    text.parse().map_err(|_| format!("{flag} expects a whole number, got {text:?}"))
}

/// Parses the arguments after the program name; `Ok(None)` means `--help`.
/// Accepts `--flag value` and `--flag=value`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options { config: EmulatorConfig::default(), exit_after: None };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg, None),
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--verbose" => {
                options.config.verbose = true;
                continue;
            }
            _ if !flag.starts_with("--") => return Err(format!("unexpected argument {flag:?}")),
            _ => {}
        }
        let Some(value) = inline_value.or_else(|| args.next()) else {
            return Err(format!("{flag} needs a value"));
        };
        let config = &mut options.config;
        match flag.as_str() {
            "--listen" => {
                config.listen = value.parse().map_err(|_| format!("--listen expects HOST:PORT, got {value:?}"))?;
            }
            "--channel" => config.channels.push(value),
            "--region" => config.region = value,
            "--account" => config.account = value,
            "--max-viewers" => config.max_viewers = parse_number(&flag, &value)?,
            "--message-ttl" => config.message_ttl = parse_seconds(&flag, &value)?,
            "--max-frame-len" => config.max_frame_len = parse_number(&flag, &value)?,
            "--exit-after" => options.exit_after = Some(parse_seconds(&flag, &value)?),
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }
    Ok(Some(options))
}

async fn serve(options: Options) -> std::io::Result<()> {
    let emulator = Emulator::start(options.config.clone()).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", emulator.ws_endpoint())?;
    for name in &options.config.channels {
        let arn = emulator.channel_arn(name).unwrap_or_default();
        writeln!(stdout, "channel {name} {arn}")?;
    }
    stdout.flush()?;
    drop(stdout);
    match options.exit_after {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending::<()>().await,
    }
    emulator.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("kvs-signaling-emulator: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kvs-emulator")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kvs-signaling-emulator: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kvs-signaling-emulator: {error}");
            ExitCode::FAILURE
        }
    }
}
