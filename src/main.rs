//! The `edgecam` command: `run` the daemon, `probe` the V4L2 devices, list encoder `profiles`,
//! `check-config` a file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{info, warn};

use edgecam::camera::{Policy, Registry, Shared};
use edgecam::config::{self, Config};
use edgecam::encoders::Catalog;
use edgecam::http::{self, AppState, WebFiles};
use edgecam::media::IceSettings;
use edgecam::service::Service;
use edgecam::supervisor::Supervisor;
use edgecam::{devices, media, probe_output};

#[derive(Parser)]
#[command(version, about = "Streams every camera on this machine to web browsers over WebRTC")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run(RunArgs),
    /// List every V4L2 node: camera or skipped (and why), formats, and the mode and encoder `run` would use.
    Probe {
        #[arg(long)]
        json: bool,
        /// Config file [default: /etc/edgecam/config.yaml if it exists], as for `run`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// List every encoder profile: usable here or not, and why.
    Profiles {
        #[arg(long)]
        json: bool,
    },
    /// Check a config file and exit (non-zero, with file:line:col, if it is invalid).
    CheckConfig { file: PathBuf },
    /// Print the argon2 hash of a password (or token secret) for `auth:` in the config. The password
    /// is read from stdin (first line) or, on a terminal, prompted for without echo.
    HashPassword {
        /// Make a random secret instead, and print it on the first line, its hash on the second.
        #[arg(long)]
        generate: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Config file [default: /etc/edgecam/config.yaml if it exists].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Add N synthetic test cameras (demo1..demoN) with a running clock.
    #[arg(long, default_value_t = 0)]
    demo: u32,
    /// Address to serve the page, API and websocket on (overrides the config).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve the viewer from this folder instead of the built-in copy (overrides the config).
    #[arg(long)]
    web_dir: Option<PathBuf>,
    /// Also load encoder profiles from this folder (repeatable; after the installed ones, same name overrides).
    #[arg(long = "profile-dir")]
    profile_dirs: Vec<PathBuf>,
    /// Restrict ICE host candidates to this address (repeatable); 127.0.0.1 streams over loopback.
    #[arg(long = "ice-local-address")]
    ice_local_addresses: Vec<IpAddr>,
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Probe { json, config } => probe(json, config.as_deref()),
        Command::Profiles { json } => profiles(json),
        Command::CheckConfig { file } => Config::load(&file)
            .map_err(anyhow::Error::from)
            .and_then(|c| c.check_exposure().map_err(anyhow::Error::msg))
            .map(|_| println!("{}: ok", file.display())),
        Command::HashPassword { generate } => hash_password(generate),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgecam: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// By default glibc gives threads up to 8 malloc arenas per core, and what a viewer's short-lived
/// streaming threads free stays mapped in whichever arena they used: 1000 viewer join/leave cycles
/// grew RSS by 4.5 MB, against 1.6 MB with one arena, which cost no measurable CPU with 8 cameras
/// (bench/results/diag/leak_arenas.md). A MALLOC_ARENA_MAX set by the user still wins. Runs before any
/// thread exists.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator, and no other thread is running yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd the journal adds its own timestamps and colours would show up as escape codes.
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!under_journal && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if under_journal {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn load_config(explicit: Option<&Path>) -> anyhow::Result<Config> {
    match explicit {
        Some(path) => Ok(Config::load(path)?),
        None if Path::new(config::DEFAULT_PATH).exists() => Ok(Config::load(Path::new(config::DEFAULT_PATH))?),
        None => Ok(Config::default()),
    }
}

fn checked_catalog(extra_dirs: &[PathBuf]) -> anyhow::Result<Catalog> {
    media::init()?;
    let mut dirs = Catalog::default_dirs();
    dirs.extend_from_slice(extra_dirs);
    let machine = media::GstMachine::real();
    let mut catalog = Catalog::load(&dirs, &machine);
    catalog.check(&machine);
    Ok(catalog)
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = load_config(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.web_dir {
        config.web_dir = Some(dir);
    }
    config.ice.local_addresses.extend(args.ice_local_addresses);
    config.check_exposure().map_err(anyhow::Error::msg)?;

    let catalog = checked_catalog(&args.profile_dirs)?;
    for report in catalog.report() {
        info!(profile = %report.name, usable = report.usable, reason = %report.reason, "encoder profile");
    }
    media::prepare_viewer_path();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(config, args.demo, catalog))
}

async fn serve(config: Config, demo: u32, catalog: Catalog) -> anyhow::Result<()> {
    let registry = Registry::new();
    let service = Service::default();
    let shared = Shared {
        ice: IceSettings {
            servers: config.ice.servers.clone(),
            local_addresses: config.ice.local_addresses.clone(),
        },
        policy: Policy::new(
            config.idle,
            std::time::Duration::from_secs(config.negotiation_timeout.0.into()),
        ),
        registry: registry.clone(),
    };
    let web = match &config.web_dir {
        Some(dir) => WebFiles::from_dir(dir.clone()),
        None => WebFiles::built_in(),
    };
    let profiles = serde_json::to_value(catalog.report()).unwrap_or_default();
    let state = AppState::new(registry, &config, profiles, web);

    let tls = config.tls.as_ref().map(http::tls::acceptor).transpose()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!("listening on {scheme}://{addr}");
    match &config.auth {
        Some(config::Auth::Required(a)) => {
            info!(
                users = a.users.len(),
                tokens = a.tokens.len(),
                "access control on: login required"
            )
        }
        Some(config::Auth::None) => warn!("auth: none: anyone who can reach {addr} watches every camera"),
        None => info!("no auth: section; serving this machine only (loopback)"),
    }
    service.http_bound();

    let devices = if config.discovery {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        match devices::spawn(tx) {
            Ok(handle) => Some((handle, rx)),
            Err(e) => {
                warn!(error = %e, "camera hot-plug unavailable; only configured test cameras will stream");
                None
            }
        }
    } else {
        None
    };
    let (_watch_handle, device_events) = match devices {
        Some((h, rx)) => (Some(h), Some(rx)),
        None => (None, None),
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let http = tokio::spawn({
        let stop = stop_rx.clone();
        let app = http::router(state);
        async move { http::server::serve(listener, app, tls, stop).await }
    });
    let supervisor = Supervisor::new(config, shared, Arc::new(catalog));
    supervisor
        .run(demo, device_events, service, async {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        })
        .await;
    // Open websockets keep graceful shutdown waiting; don't let one page hold up a restart.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), http).await;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("signal received, stopping");
}

fn hash_password(generate: bool) -> anyhow::Result<()> {
    let password = if generate {
        let secret = http::auth::random_secret();
        println!("{secret}");
        secret
    } else {
        read_password()?
    };
    if password.is_empty() {
        anyhow::bail!("empty password");
    }
    let hash = http::auth::hash_password(&password).map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    println!("{hash}");
    Ok(())
}

/// The first line of stdin; on a terminal, prompted for with echo off (termios) so it is not shown.
fn read_password() -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        eprint!("Password: ");
        std::io::stderr().flush()?;
        // SAFETY: plain termios calls on fd 0, restored right after reading.
        let mut term: libc::termios = unsafe { std::mem::zeroed() };
        let have_term = unsafe { libc::tcgetattr(0, &mut term) } == 0;
        if have_term {
            let mut quiet = term;
            quiet.c_lflag &= !libc::ECHO;
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
        }
        let read = stdin.lock().read_line(&mut line);
        if have_term {
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &term) };
        }
        eprintln!();
        read?;
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn probe(json: bool, config: Option<&Path>) -> anyhow::Result<()> {
    let config = load_config(config)?;
    let reports = devices::scan();
    let catalog = checked_catalog(&[])?;
    let answers = probe_output::answers(&reports, &config, &catalog);
    if json {
        let value = probe_output::json(&reports, &answers)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", probe_output::table(&reports, &answers));
    }
    Ok(())
}

fn profiles(json: bool) -> anyhow::Result<()> {
    let catalog = checked_catalog(&[])?;
    let report = catalog.report();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:<14} {:<6} {:>8}  {:<8} reason",
            "profile", "codec", "priority", "usable"
        );
        for r in &report {
            let codec = r.codec.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
            let priority = r.priority.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
            let usable = if r.usable { "yes" } else { "no" };
            println!("{:<14} {codec:<6} {priority:>8}  {usable:<8} {}", r.name, r.reason);
        }
    }
    Ok(())
}
