//! `quern submit`, `jobs`, `status`, `output`, `cancel`, `upload`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use protocol::api::JobInfo;
use protocol::{JobSpec, JobState};

use crate::client::{Client, ClientArgs};
use crate::options::JobOptions;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The job's `.wasm` component (a local file) or a module sha256.
    module: String,
    /// Inputs: local files (uploaded) or dataset paths and globs (`books/*.txt`).
    #[arg(required = true)]
    inputs: Vec<String>,
    #[command(flatten)]
    options: JobOptions,
    /// A name for the job.
    #[arg(long)]
    name: Option<String>,
    /// Attempts per task before the job fails.
    #[arg(long, default_value_t = 4)]
    max_attempts: u32,
    /// Never run backup attempts of slow tasks.
    #[arg(long)]
    no_backups: bool,
    /// Wait for the job, showing its progress.
    #[arg(long)]
    wait: bool,
    /// With --wait: save the outputs here once the job succeeds.
    #[arg(long)]
    download: Option<PathBuf>,
}

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        (done as usize * width) / total as usize
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

fn progress_line(job: &JobInfo) -> String {
    format!(
        "job {} {:<9} map {} {}/{}  reduce {} {}/{}",
        job.id,
        job.state.as_str(),
        bar(job.map.completed, job.map.total, 20),
        job.map.completed,
        job.map.total,
        bar(job.reduce.completed, job.reduce.total, 20),
        job.reduce.completed,
        job.reduce.total
    )
}

/// Prints a finished job: state, error, counters, outputs.
fn print_job(job: &JobInfo) {
    println!("job {}: {}", job.id, job.state.as_str());
    if let Some(error) = &job.error {
        println!("  error: {error}");
    }
    for (name, value) in &job.counters.0 {
        println!("  {name:<34} {value}");
    }
    if !job.outputs.is_empty() {
        println!(
            "  outputs: {} (quern output {} --download DIR)",
            job.outputs.join(" "),
            job.id
        );
    }
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let module_path = PathBuf::from(&args.module);
    let module = if module_path.exists() {
        client.upload_module(&module_path).await?
    } else {
        client.module(&args.module).await?
    };
    let mut inputs = Vec::new();
    for input in &args.inputs {
        let path = PathBuf::from(input);
        if path.is_file() {
            inputs.push(client.upload_input(&path).await?);
        } else {
            inputs.push(input.clone());
        }
    }
    let options = args.options;
    let mode = options
        .mode_for(module.kind)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.module))?;
    let mut spec = JobSpec::new(module.sha256, inputs, options.reducers);
    spec.split_size = options.split_size;
    spec.format = options.format;
    spec.mode = mode;
    spec.combine = !options.no_combine;
    spec.combine_buffer = options.combine_buffer;
    spec.partitioner = options.partitioner;
    spec.limits = options.limits();
    spec.args = options.args;
    spec.name = args.name;
    spec.max_attempts = args.max_attempts;
    spec.backups = !args.no_backups;
    let job = client.submit(&spec).await?;
    if !args.wait {
        println!("{}", job.id);
        return Ok(ExitCode::SUCCESS);
    }
    let id = job.id.to_string();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_line = String::new();
    let finished = client
        .follow(&id, |job| {
            let line = progress_line(job);
            if line != last_line {
                if tty {
                    eprint!("\r{line}");
                } else {
                    eprintln!("{line}");
                }
                let _ = std::io::stderr().flush();
                last_line = line;
            }
        })
        .await?;
    if tty {
        eprintln!();
    }
    print_job(&finished);
    if finished.state != JobState::Succeeded {
        return Ok(ExitCode::FAILURE);
    }
    if let Some(dir) = args.download {
        for path in client.download(&id, &dir).await? {
            println!("  saved {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The job id.
    job: String,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The job id.
    job: String,
    /// Save the outputs into this directory.
    #[arg(long)]
    download: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Local files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Dataset directory to upload into (e.g. `books`).
    #[arg(long = "to", default_value = "uploads")]
    to: String,
}

pub async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    println!(
        "{:>6}  {:<10} {:>9} {:>9}  name",
        "id", "state", "maps", "reduces"
    );
    for job in client.jobs().await? {
        println!(
            "{:>6}  {:<10} {:>4}/{:<4} {:>4}/{:<4}  {}",
            job.id,
            job.state.as_str(),
            job.map.completed,
            job.map.total,
            job.reduce.completed,
            job.reduce.total,
            job.spec.name.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(args: JobArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let job = client.job(&args.job).await?;
    println!("{}", progress_line(&job));
    print_job(&job);
    Ok(ExitCode::SUCCESS)
}

pub async fn output(args: OutputArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    match args.download {
        Some(dir) => {
            for path in client.download(&args.job, &dir).await? {
                println!("{}", path.display());
            }
        }
        None => {
            for file in client.outputs(&args.job).await? {
                println!("{}\t{}", file.name, file.size);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(args: JobArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let job = client.cancel(&args.job).await?;
    println!("job {}: {}", job.id, job.state.as_str());
    Ok(ExitCode::SUCCESS)
}

pub async fn upload(args: UploadArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    for file in &args.files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow::anyhow!("{} has no file name", file.display()))?;
        let dest = format!("{}/{name}", args.to.trim_matches('/'));
        let stored = client.upload_file(file, &dest).await?;
        println!("{}\t{}", stored.path, stored.size);
    }
    Ok(ExitCode::SUCCESS)
}
