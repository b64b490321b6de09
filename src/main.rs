//! `chroma-ha`: parse the configuration, start the proxy, wait for shutdown.

use std::process::ExitCode;

use chroma_ha::config::{Cli, Config};
use clap::Parser;
use log::{error, info};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(errors) => {
            for e in errors {
                eprintln!("chroma-ha: configuration error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    info!("chroma-ha {} starting: {config}", env!("CARGO_PKG_VERSION"));
    let served = actix_web::rt::System::new().block_on(async {
        let server = chroma_ha::http::start(&config)?;
        info!("listening on http://{}", config.listen_addr);
        server.await
    });
    match served {
        Ok(()) => {
            info!("shutdown complete");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("cannot serve on LISTEN_ADDR={}: {e}", config.listen_addr);
            ExitCode::FAILURE
        }
    }
}
