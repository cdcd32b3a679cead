//! The `quern` command: local runs, the coordinator, workers, a one-process
//! local cluster, and the client.

mod client;
mod cluster;
mod jobs;
mod options;
mod run;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Quern: MapReduce jobs written in WebAssembly.
#[derive(Debug, Parser)]
#[command(name = "quern", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job in this process, sequentially (the local runner).
    Run(run::RunArgs),
    /// Run the coordinator.
    Serve(cluster::ServeArgs),
    /// Run a worker.
    Worker(cluster::WorkerArgs),
    /// Run a coordinator and workers in one process (local cluster on SQLite).
    Up(cluster::UpArgs),
    /// Submit a job (uploading the module and local inputs).
    Submit(jobs::SubmitArgs),
    /// List recent jobs.
    Jobs(jobs::ListArgs),
    /// Show a job.
    Status(jobs::JobArgs),
    /// List or download a job's outputs.
    Output(jobs::OutputArgs),
    /// Cancel a job.
    Cancel(jobs::JobArgs),
    /// Upload files as a dataset.
    Upload(jobs::UploadArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUERN_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        other => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(dispatch(other))),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    match command {
        Command::Run(_) => unreachable!("handled without a runtime"),
        Command::Serve(args) => ok(cluster::serve(args).await),
        Command::Worker(args) => ok(cluster::worker(args).await),
        Command::Up(args) => ok(cluster::up(args).await),
        Command::Submit(args) => jobs::submit(args).await,
        Command::Jobs(args) => jobs::list(args).await,
        Command::Status(args) => jobs::status(args).await,
        Command::Output(args) => jobs::output(args).await,
        Command::Cancel(args) => jobs::cancel(args).await,
        Command::Upload(args) => jobs::upload(args).await,
    }
}
