//! `site-agent`: the client agent's binary (see the `agent` crate).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = agent::cli::Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("site-agent: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(agent::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("site-agent: {line}");
            ExitCode::from(e.exit_code())
        }
    }
}
