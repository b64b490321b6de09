//! `chroma-ha`: parse the configuration, start the proxy, wait for shutdown.

use std::process::ExitCode;

use chroma_ha::config::{Cli, Command, Config, ConfigError, RawSettings};
use chroma_ha::tls::Tls;
use chroma_ha::wal::store::WalStore;
use log::{error, info};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Clients of a running proxy: none of the proxy's own settings apply.
    match &cli.command {
        Some(Command::Check(args)) => return chroma_ha::remote::run(args),
        Some(Command::Status(args)) => return chroma_ha::remote::status(args),
        Some(Command::Verify(args)) => return chroma_ha::audit::verify(args),
        Some(Command::Repair(args)) => return chroma_ha::audit::repair(args),
        _ => {}
    }
    let raw = match RawSettings::load(&cli) {
        Ok(raw) => raw,
        Err(errors) => return config_errors(errors),
    };
    // Logging starts once the settings are read, since the config file may set RUST_LOG;
    // configuration errors go to stderr directly.
    init_logging(&raw.log_filter());
    if cli.command == Some(Command::Migrate) {
        let database = match raw.database_url() {
            Ok(database) => database,
            Err(errors) => return config_errors(errors),
        };
        return match WalStore::open(&database, Vec::new()) {
            Ok(store) => {
                info!("write-ahead log migrations applied to {} ({database})", store.backend());
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::validate(&raw) {
        Ok(config) => Config { config_file: cli.config_file.clone(), ..config },
        Err(errors) => return config_errors(errors),
    };
    let tokens = match config.token_sources().load() {
        Ok(tokens) => tokens,
        Err(e) => return config_errors(vec![e]),
    };
    // The TLS files are read before anything starts, so a bad one is a configuration error.
    let tls = match Tls::load(&config) {
        Ok(tls) => tls,
        Err(errors) => return config_errors(errors),
    };
    info!("chroma-ha {} starting: {config}", env!("CARGO_PKG_VERSION"));
    chroma_ha::memory::tune_allocator();
    let serve = chroma_ha::app::serve(&config, tokens, tls);
    let code = match actix_web::rt::System::new().block_on(serve) {
        Ok(()) => {
            info!("shutdown complete");
            0
        }
        Err(e) => {
            error!("{e}");
            1
        }
    };
    // Exit now: requests are drained and the WAL committed; dropping the runtime would wait for
    // blocking tasks still retrying an unreachable WAL store.
    std::process::exit(code)
}

/// env_logger with RUST_LOG as the configuration resolved it (flag, environment, config file,
/// default `info`); RUST_LOG_STYLE as env_logger reads it.
fn init_logging(filter: &str) {
    let style = std::env::var("RUST_LOG_STYLE").unwrap_or_default();
    env_logger::Builder::new()
        .parse_filters(filter)
        .parse_write_style(&style)
        .format_timestamp_millis()
        .init();
}

/// One line per bad setting, then exit status 2.
fn config_errors(errors: Vec<ConfigError>) -> ExitCode {
    for e in errors {
        eprintln!("chroma-ha: configuration error: {e}");
    }
    ExitCode::from(2)
}
