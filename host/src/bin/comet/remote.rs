//! `comet deploy` and `comet modules`: clients of a running server's admin
//! API.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

/// Where the admin API is and how to get in.
#[derive(Debug, Args)]
pub(crate) struct Server {
    /// Base URL of the server's admin API.
    #[arg(
        long,
        env = "COMET_SERVER",
        default_value = "http://127.0.0.1:9090",
        value_name = "URL"
    )]
    server: String,

    /// Admin bearer token (printed by `comet run` at start, or the
    /// COMET_ADMIN_TOKEN it was given).
    #[arg(
        long,
        env = "COMET_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: String,
}

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    server: Server,

    /// Module name (a-z 0-9 - _).
    name: String,

    /// A .wasm component, or a guest crate directory (built first).
    path: PathBuf,

    /// Build a guest crate with cargo's dev profile instead of --release.
    #[arg(long)]
    debug: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ModulesArgs {
    #[command(subcommand)]
    command: ModulesCommand,
}

#[derive(Debug, Subcommand)]
enum ModulesCommand {
    /// List modules with their serving version, hash and load time.
    Ls {
        #[command(flatten)]
        server: Server,
    },
    /// Show one module and its earlier versions, as JSON.
    Show {
        /// Module name.
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// Remove a module (refused while routes or channels use it).
    Rm {
        /// Module name.
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// Serve the previous version of a module again.
    Rollback {
        /// Module name.
        name: String,
        #[command(flatten)]
        server: Server,
    },
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.trim_end_matches('/'))
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into()
    }

    /// Send a request, and turn an error answer into an error that carries
    /// the server's message.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<Value> {
        let url = self.url(path);
        let auth = format!("Bearer {}", self.token);
        let agent = self.agent();
        let result = match (method, body) {
            ("PUT", Some(bytes)) => agent
                .put(&url)
                .header("authorization", &auth)
                .header("content-type", "application/wasm")
                .send(bytes),
            ("POST", _) => agent.post(&url).header("authorization", &auth).send_empty(),
            ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
            _ => agent.get(&url).header("authorization", &auth).call(),
        };
        let mut response = result.with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = value["message"].as_str().unwrap_or("(no message)");
            let code = value["error"].as_str().unwrap_or("error");
            bail!("{method} {url}: {status} {code}: {message}");
        }
        Ok(value)
    }
}

pub(crate) fn deploy(args: &DeployArgs) -> anyhow::Result<()> {
    let wasm = comet_host::app::component_file(&args.path, !args.debug)?;
    let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    // A server refuses an oversized upload before reading it, which a client
    // still sending sees as a broken connection: ask for the limit first.
    let status = args.server.call("GET", "/admin/status", None)?;
    if let Some(max) = status["max_module_bytes"].as_u64()
        && bytes.len() as u64 > max
    {
        bail!(
            "{} is {} bytes, over the server's limit of {max} bytes (its --max-module-mib)",
            wasm.display(),
            bytes.len()
        );
    }
    eprintln!(
        "comet: uploading {} ({} KiB) as {} to {}",
        wasm.display(),
        bytes.len().div_ceil(1024),
        args.name,
        args.server.server
    );
    let started = Instant::now();
    let reply = args.server.call(
        "PUT",
        &format!("/admin/modules/{}", args.name),
        Some(&bytes),
    )?;
    let current = &reply["current"];
    println!(
        "comet: deployed {} version {} (sha256 {}) in {:.0} ms{}",
        args.name,
        current["version"],
        current["hash"]
            .as_str()
            .map_or("?", |h| &h[..h.len().min(12)]),
        started.elapsed().as_secs_f64() * 1000.0,
        if current["cached"] == true {
            ", compile cache hit"
        } else {
            ""
        }
    );
    if let Some(warning) = reply["warning"].as_str() {
        eprintln!("comet: warning: {warning}");
    }
    Ok(())
}

pub(crate) fn modules(args: &ModulesArgs) -> anyhow::Result<()> {
    match &args.command {
        ModulesCommand::Ls { server } => {
            let list = server.call("GET", "/admin/modules", None)?;
            println!(
                "{:<24} {:>7} {:<14} {:>9}  LOADED",
                "NAME", "VERSION", "SHA256", "SIZE"
            );
            for m in list.as_array().into_iter().flatten() {
                let c = &m["current"];
                let hash = c["hash"].as_str().unwrap_or("");
                println!(
                    "{:<24} {:>7} {:<14} {:>9}  {} ({}, {} earlier)",
                    m["name"].as_str().unwrap_or("?"),
                    c["version"],
                    &hash[..hash.len().min(12)],
                    c["size"],
                    c["loaded_at"].as_str().unwrap_or(""),
                    c["origin"].as_str().unwrap_or(""),
                    m["previous"].as_array().map_or(0, Vec::len),
                );
            }
        }
        ModulesCommand::Show { name, server } => {
            let info = server.call("GET", &format!("/admin/modules/{name}"), None)?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        ModulesCommand::Rm { name, server } => {
            server.call("DELETE", &format!("/admin/modules/{name}"), None)?;
            println!("comet: removed {name}");
        }
        ModulesCommand::Rollback { name, server } => {
            let reply = server.call("POST", &format!("/admin/modules/{name}/rollback"), None)?;
            println!(
                "comet: {name} now serves version {}",
                reply["current"]["version"]
            );
        }
    }
    Ok(())
}
