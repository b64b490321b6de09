//! `chroma-ha`: parse the configuration, start the proxy, wait for shutdown.

use std::process::ExitCode;

use chroma_ha::config::{Cli, Command, Config, ConfigError};
use chroma_ha::wal::store::WalStore;
use clap::Parser;
use log::{error, info};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if cli.command == Some(Command::Migrate) {
        let database = match Config::load_database(&cli) {
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
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(errors) => return config_errors(errors),
    };
    info!("chroma-ha {} starting: {config}", env!("CARGO_PKG_VERSION"));
    let code = match actix_web::rt::System::new().block_on(chroma_ha::http::serve(&config)) {
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

/// One line per bad setting, then exit status 2.
fn config_errors(errors: Vec<ConfigError>) -> ExitCode {
    for e in errors {
        eprintln!("chroma-ha: configuration error: {e}");
    }
    ExitCode::from(2)
}
