//! `kvs-signaling-emulator`: runs the local signaling service emulator.
//!
//! Stdout, one line each, flushed before serving: the WebSocket endpoint base
//! (`ws://HOST:PORT`, or `wss://HOST:PORT` with `--tls`), then
//! `channel NAME ARN` for each pre-created channel, then `ca PATH` (with TLS:
//! the PEM file clients trust), then `control-plane URL` (`http(s)://HOST:PORT`),
//! then with an IoT endpoint `iot-endpoint HOST:PORT`, `iot-ca PATH` and
//! `iot-device THING CERT KEY` for each `--iot-issue-device`.
//! Runs until killed or until `--exit-after` elapses. Quotas are on unless
//! `--no-quotas`; authentication is off unless `--access-key` / `--secret-key`.

use kvs_signaling::emulator::{Emulator, EmulatorConfig, IotCa, IotConfig, TlsSetting};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
Usage: kvs-signaling-emulator [OPTIONS]

Local emulator of the Amazon Kinesis Video Streams WebRTC signaling service:
WebSocket data plane, control-plane API, SigV4 checks, quotas, fault injection
(POST /admin/...), all on one port.

Prints, one per line: `ws://HOST:PORT` (or `wss://` with TLS); `channel NAME ARN`
per channel; `ca PATH` with TLS; `control-plane URL`; with an IoT endpoint
`iot-endpoint HOST:PORT`, `iot-ca PATH` and `iot-device THING CERT KEY` per
issued device.

Options:
  --listen ADDR            address to bind (default 127.0.0.1:0, a free port)
  --channel NAME           create a channel at start (repeatable)
  --region REGION          region of ARNs and SigV4 scopes (default us-west-2)
  --account ACCOUNT        account id in channel ARNs (default 123456789012)
  --max-viewers N          viewers allowed per channel (default 10)
  --message-ttl SECS       default time messages wait for an absent recipient (default 60)
  --max-frame-len BYTES    longest inbound WebSocket frame (default 65536)
  --access-key ID          accept SigV4 signatures of this access key (repeatable;
  --secret-key SECRET        each --access-key pairs with the --secret-key after it)
  --no-auth                accept unsigned requests even if keys are given (default
                           without keys)
  --tls                    serve TLS with a certificate generated at start
  --cert-out PATH          where to write the generated CA certificate (default: a
                           file in the temporary directory); implies --tls
  --cert FILE --key FILE   serve TLS with this PEM certificate chain and key
  --no-quotas              do not enforce message and connect rate quotas
  --idle-timeout SECS      close connections silent this long (default 600)
  --max-connection-age SECS  close connections this old (default 3600)
  --go-away-grace SECS     time between GO_AWAY and the close (default 60)
  --ice-server-ttl SECS    Ttl of GetIceServerConfig credentials (default 300)
  --storage-session-duration SECS  a storage session's maximum duration (default 3600)
  --storage-session-idle SECS      a storage session's idle timeout (default 180)
  --admin-token TOKEN      also serve the admin endpoint (/admin/...) to peers off
                           loopback that send `Authorization: Bearer TOKEN`; without
                           it only loopback peers may use it (printed: `admin ...`)
  --iot                    serve an AWS IoT credentials provider (mutual TLS) on a
                           listener of its own; SigV4 then accepts the keys it issues
  --iot-listen ADDR        its address (default 127.0.0.1:0); implies --iot
  --iot-ca CERT --iot-ca-key KEY
                           its device CA (PEM); default: generated at start
  --iot-ca-out PATH        where to write the generated device CA (default: a file
                           in the temporary directory)
  --iot-role-alias ALIAS   a role alias that exists (repeatable; default
                           kvs-signaling-role-alias)
  --iot-credential-lifetime SECS
                           lifetime of the issued keys (default 3600)
  --iot-issue-device DIR/NAME
                           issue a device certificate for thing NAME, written to
                           DIR/NAME.cert.pem and DIR/NAME.key.pem (repeatable)
  --exit-after SECS        stop after this many seconds (default: run until killed)
  --verbose                log connections and routing to stderr
  --help                   print this help
";

/// What the command line asks for.
struct Options {
    config: EmulatorConfig,
    exit_after: Option<Duration>,
    /// `DIR/NAME` prefixes of device certificates to issue at start.
    iot_devices: Vec<PathBuf>,
}

/// TLS and credential flags, combined once all arguments are read.
#[derive(Default)]
struct Pending {
    tls: bool,
    ca_out: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    access_keys: Vec<String>,
    secret_keys: Vec<String>,
    no_auth: bool,
    iot: bool,
    iot_listen: Option<std::net::SocketAddr>,
    iot_ca: Option<PathBuf>,
    iot_ca_key: Option<PathBuf>,
    iot_ca_out: Option<PathBuf>,
    iot_role_aliases: Vec<String>,
    iot_lifetime: Option<Duration>,
}

impl Pending {
    fn apply(self, config: &mut EmulatorConfig) -> Result<(), String> {
        config.tls = match (self.cert, self.key) {
            (Some(cert), Some(key)) => {
                if self.ca_out.is_some() {
                    return Err("--cert-out is for a generated certificate; not with --cert".into());
                }
                Some(TlsSetting::Files { cert, key })
            }
            (None, None) if self.tls || self.ca_out.is_some() => Some(TlsSetting::Generate { ca_out: self.ca_out }),
            (None, None) => None,
            _ => return Err("--cert and --key go together".into()),
        };
        if self.access_keys.len() != self.secret_keys.len() {
            return Err("each --access-key needs a --secret-key".into());
        }
        if !self.no_auth && !self.access_keys.is_empty() {
            config.auth = Some(self.access_keys.into_iter().zip(self.secret_keys).collect());
        }
        let ca = match (self.iot_ca, self.iot_ca_key) {
            (Some(cert), Some(key)) if self.iot_ca_out.is_none() => Some(IotCa::Files { cert, key }),
            (Some(_), Some(_)) => return Err("--iot-ca-out is for a generated CA; not with --iot-ca".into()),
            (None, None) => None,
            _ => return Err("--iot-ca and --iot-ca-key go together".into()),
        };
        let wanted = self.iot
            || self.iot_listen.is_some()
            || ca.is_some()
            || self.iot_ca_out.is_some()
            || !self.iot_role_aliases.is_empty()
            || self.iot_lifetime.is_some();
        if wanted {
            let defaults = IotConfig::default();
            config.iot = Some(IotConfig {
                listen: self.iot_listen.unwrap_or(defaults.listen),
                ca: ca.unwrap_or(IotCa::Generate { ca_out: self.iot_ca_out }),
                role_aliases: if self.iot_role_aliases.is_empty() {
                    defaults.role_aliases
                } else {
                    self.iot_role_aliases
                },
                credential_lifetime: self.iot_lifetime.unwrap_or(defaults.credential_lifetime),
            });
        }
        Ok(())
    }
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
    // The binary is the faithful service: quotas on unless --no-quotas.
    let mut options = Options {
        config: EmulatorConfig { quotas: true, ..EmulatorConfig::default() },
        exit_after: None,
        iot_devices: Vec::new(),
    };
    let mut pending = Pending::default();
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
            "--tls" => {
                pending.tls = true;
                continue;
            }
            "--no-auth" => {
                pending.no_auth = true;
                continue;
            }
            "--no-quotas" => {
                options.config.quotas = false;
                continue;
            }
            "--iot" => {
                pending.iot = true;
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
            "--access-key" => pending.access_keys.push(value),
            "--secret-key" => pending.secret_keys.push(value),
            "--cert-out" => pending.ca_out = Some(PathBuf::from(value)),
            "--cert" => pending.cert = Some(PathBuf::from(value)),
            "--key" => pending.key = Some(PathBuf::from(value)),
            "--idle-timeout" => config.idle_timeout = parse_seconds(&flag, &value)?,
            "--max-connection-age" => config.max_connection_age = parse_seconds(&flag, &value)?,
            "--go-away-grace" => config.go_away_grace = parse_seconds(&flag, &value)?,
            "--ice-server-ttl" => config.ice_server_ttl = parse_seconds(&flag, &value)?,
            "--storage-session-duration" => config.storage_session_max_duration = parse_seconds(&flag, &value)?,
            "--storage-session-idle" => config.storage_session_idle_timeout = parse_seconds(&flag, &value)?,
            "--admin-token" if value.is_empty() => return Err("--admin-token must not be empty".into()),
            "--admin-token" => config.admin_token = Some(value),
            "--iot-listen" => {
                let addr = value.parse().map_err(|_| format!("--iot-listen expects HOST:PORT, got {value:?}"))?;
                pending.iot_listen = Some(addr);
            }
            "--iot-ca" => pending.iot_ca = Some(PathBuf::from(value)),
            "--iot-ca-key" => pending.iot_ca_key = Some(PathBuf::from(value)),
            "--iot-ca-out" => pending.iot_ca_out = Some(PathBuf::from(value)),
            "--iot-role-alias" => pending.iot_role_aliases.push(value),
            "--iot-credential-lifetime" => pending.iot_lifetime = Some(parse_seconds(&flag, &value)?),
            "--iot-issue-device" => {
                pending.iot = true;
                options.iot_devices.push(PathBuf::from(value));
            }
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }
    pending.apply(&mut options.config)?;
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
    if let Some(path) = emulator.ca_path() {
        writeln!(stdout, "ca {}", path.display())?;
    }
    writeln!(stdout, "control-plane {}", emulator.control_plane_url())?;
    writeln!(stdout, "admin {}", emulator.admin_access())?;
    if let (Some(endpoint), Some(ca)) = (emulator.iot_endpoint(), emulator.iot_ca_path()) {
        writeln!(stdout, "iot-endpoint {endpoint}")?;
        writeln!(stdout, "iot-ca {}", ca.display())?;
    }
    for prefix in &options.iot_devices {
        let thing = prefix.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        let (cert, key) = emulator.issue_iot_device(thing)?.write(prefix)?;
        writeln!(stdout, "iot-device {thing} {} {}", cert.display(), key.display())?;
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
