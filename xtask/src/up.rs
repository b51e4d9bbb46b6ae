//! `cargo xtask up`: a collector and the agents that fit this machine,
//! running against each other, with the commands to see their data.
//!
//! Everything lives in `./sightline-data` (or `--data DIR`); the project's
//! credentials are kept in `<data>/local.credentials` so a second `up`
//! reuses them. Ctrl-C (or `--for DURATION`) stops everything.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{cargo_build_bins, terminate, wait_exit};

/// Options of `up`.
#[derive(Debug)]
pub(crate) struct UpOptions {
    data: PathBuf,
    grpc: String,
    http: String,
    run_for: Option<Duration>,
    build: bool,
}

impl UpOptions {
    pub(crate) fn parse(root: &Path, args: &[String]) -> Result<UpOptions> {
        let mut options = UpOptions {
            data: root.join("sightline-data"),
            grpc: "127.0.0.1:6600".into(),
            http: "127.0.0.1:6680".into(),
            run_for: None,
            build: true,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .with_context(|| format!("{arg} needs a value"))
            };
            match arg.as_str() {
                "--data" => options.data = PathBuf::from(value()?),
                "--grpc" => options.grpc = value()?,
                "--http" => options.http = value()?,
                "--for" => {
                    let text = value()?;
                    let secs: u64 = text
                        .trim_end_matches('s')
                        .parse()
                        .context("--for takes seconds, like 30s")?;
                    options.run_for = Some(Duration::from_secs(secs));
                }
                "--no-build" => options.build = false,
                other => bail!("up: unknown option {other}; see `cargo xtask help`"),
            }
        }
        Ok(options)
    }
}

struct Credentials {
    license: String,
    token: String,
}

fn credentials(bin: &Path, data: &Path) -> Result<Credentials> {
    let saved = data.join("local.credentials");
    let text = match fs::read_to_string(&saved) {
        Ok(text) => text,
        Err(_) => {
            let out = Command::new(bin.join("sightline-collector"))
                .args(["project", "create", "local", "--data"])
                .arg(data)
                .output()
                .context("running sightline-collector project create")?;
            if !out.status.success() {
                bail!(
                    "project create failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let text = String::from_utf8(out.stdout)?;
            write_private(&saved, &text)?;
            text
        }
    };
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
            .with_context(|| format!("{} has no {key}", saved.display()))
    };
    Ok(Credentials {
        license: field("license=")?,
        token: field("token=")?,
    })
}

/// Writes a file only its owner can read (it holds secrets).
fn write_private(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

pub(crate) fn run(root: &Path, options: UpOptions) -> Result<()> {
    if options.build {
        cargo_build_bins(root, false)?;
    }
    let bin = root.join("target/debug");
    fs::create_dir_all(&options.data)?;
    let creds = credentials(&bin, &options.data)?;

    let mut collector = Command::new(bin.join("sightline-collector"))
        .args([
            "serve",
            "--grpc",
            &options.grpc,
            "--http",
            &options.http,
            "--data",
        ])
        .arg(&options.data)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the collector")?;
    let stdout = collector.stdout.take().context("collector stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let listening = lines
        .next()
        .transpose()?
        .context("the collector exited before listening (is the port taken? see its log above)")?;
    std::thread::spawn(move || for _ in lines {});
    let addr = |key: &str| {
        listening
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
            .with_context(|| format!("no {key} in '{listening}'"))
    };
    let (grpc, http) = (addr("grpc=")?, addr("http=")?);
    let (grpc_host, grpc_port) = grpc.rsplit_once(':').context("grpc address")?;

    let agent_dir = options.data.join("agents");
    fs::create_dir_all(&agent_dir)?;
    let conf = agent_dir.join("infra.conf");
    write_private(
        &conf,
        &format!(
            "# written by cargo xtask up\nlicense={}\nserver.host={grpc_host}\nserver.port={grpc_port}\ndata.dir={}\n",
            creds.license,
            agent_dir.join("infra").display()
        ),
    )?;
    let mut agents: Vec<(&str, Child)> = vec![(
        "sightline-infra",
        Command::new(bin.join("sightline-infra"))
            .arg("--conf")
            .arg(&conf)
            .spawn()
            .context("starting sightline-infra")?,
    )];

    let base = format!("http://{http}");
    let oid = wait_for_agent(&base, &creds.token)?;
    println!();
    println!("Sightline is up.");
    println!(
        "  collector  gRPC {grpc}, API {base}, store {}",
        options.data.display()
    );
    println!("  agents     sightline-infra (config {})", conf.display());
    println!("  token      {}", creds.token);
    println!("  console    {base}/ (sign in with the token)");
    println!();
    println!("See live data:");
    println!(
        "  curl -s -H 'Authorization: Bearer {}' {base}/api/v1/agents",
        creds.token
    );
    println!(
        "  curl -s -H 'Authorization: Bearer {}' '{base}/api/v1/agents/{oid}/metrics?name=cpu.usage'",
        creds.token
    );
    println!(
        "  curl -s -H 'Authorization: Bearer {}' {base}/api/v1/events",
        creds.token
    );
    println!();
    println!("Ctrl-C stops everything.");

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) && options.run_for.is_none_or(|d| started.elapsed() < d) {
        if let Ok(Some(status)) = collector.try_wait() {
            bail!("the collector exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("Stopping.");
    for (name, child) in &mut agents {
        terminate(child);
        if wait_exit(child, Duration::from_secs(2)).is_none() {
            eprintln!("{name} did not stop; killing it");
            let _ = child.kill();
        }
    }
    terminate(&collector);
    if wait_exit(&mut collector, Duration::from_secs(3)).is_none() {
        let _ = collector.kill();
    }
    Ok(())
}

/// Waits until the infra agent has registered and sent CPU data; its id.
fn wait_for_agent(base: &str, token: &str) -> Result<i64> {
    let client: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let get = |path: &str| -> Option<serde_json::Value> {
        client
            .get(format!("{base}{path}"))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .ok()?
            .body_mut()
            .read_json()
            .ok()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let agent = get("/api/v1/agents").and_then(|body| {
            body["agents"]
                .as_array()?
                .iter()
                .find(|a| a["product"] == "infra" && a["status"] == "up")
                .cloned()
        });
        if let Some(oid) = agent.and_then(|a| a["oid"].as_i64()) {
            let cpu = get(&format!("/api/v1/agents/{oid}/metrics?name=cpu.usage"));
            if cpu.is_some_and(|c| c["series"].as_array().is_some_and(|s| !s.is_empty())) {
                return Ok(oid);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("the infra agent did not report within 30 s; see its log above")
}
