//! A host started in this process (through the library's composition root
//! and its start-up policy) with a broker of the test's choosing, served on
//! a real socket.

use std::path::Path;
use std::sync::Arc;

use comet_host::app::{Host, HostConfig, RunningHost, Served, serve_versions};
use comet_host::channels::Broker;
use comet_host::manifest::Manifest;
use comet_host::metrics::Snapshot;
use comet_host::runtime::EngineSettings;
use comet_testkit::guests;

/// The publish token of in-process hosts.
pub(crate) const TOKEN: &str = "inproc-token";

/// The channels test guest, served at `/` and for `/comet/`.
pub(crate) struct InProcess {
    runtime: tokio::runtime::Runtime,
    host: Option<RunningHost>,
}

impl InProcess {
    /// Start with `broker` (`None`: the memory broker).
    pub(crate) fn start(broker: Option<Arc<dyn Broker>>) -> anyhow::Result<InProcess> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let host = runtime.block_on(async {
            let text = format!("[modules.app]\npath = {:?}\n", guests::CHANNELS_APP);
            let manifest = Manifest::parse(&text, Path::new("inproc.toml"))?;
            let mut config = HostConfig::new(manifest.clone(), TOKEN.into());
            config.engine = EngineSettings {
                max_instances: 64,
                ..EngineSettings::default()
            };
            config.data_dir = None;
            config.broker = broker;
            // Quick, so a test sees a lost last message come back.
            config.position_check = std::time::Duration::from_millis(200);
            let host = Host::new(config)?;
            let started = serve_versions(host.registry(), &manifest, false, true).await?;
            anyhow::ensure!(
                matches!(&started.served[..], [Served::File { name, .. }] if name == "app"),
                "{started:?}"
            );
            anyhow::Ok(host.start("127.0.0.1:0".parse()?, None).await?)
        })?;
        Ok(InProcess {
            runtime,
            host: Some(host),
        })
    }

    /// `http://ADDR` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        let addr = self.host.as_ref().map(|h| h.addr).expect("running");
        format!("http://{addr}{path}")
    }

    /// The host's metrics as `/metrics` serves them (its counters only).
    pub(crate) fn metrics(&self) -> String {
        let host = self.host.as_ref().expect("running");
        host.metrics.encode(Snapshot::default(), false)
    }

    /// Publish `text` to `channel` through the publish API.
    pub(crate) fn publish(&self, channel: &str, text: &str) -> anyhow::Result<serde_json::Value> {
        let r = comet_testkit::send(
            "POST",
            &self.url(&format!("/comet/publish/{channel}")),
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "text/plain"),
            ],
            Some(text.as_bytes()),
        )?;
        anyhow::ensure!(r.status == 200, "publish: {} {}", r.status, r.body);
        Ok(serde_json::from_str(&r.body)?)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(host) = self.host.take() {
            let _ = self.runtime.block_on(host.stop());
        }
    }
}

/// Two hosts in one process count apart: a publish through one shows in its
/// metrics only.
#[test]
fn two_hosts_keep_their_own_metrics() -> anyhow::Result<()> {
    let a = InProcess::start(None)?;
    let b = InProcess::start(None)?;
    a.publish("counted", "once")?;
    let published = "comet_publishes_total{source=\"api\",verdict=\"published\"} 1";
    assert!(
        a.metrics().lines().any(|l| l == published),
        "{}",
        a.metrics()
    );
    assert!(
        !b.metrics().contains("comet_publishes_total{"),
        "{}",
        b.metrics()
    );
    Ok(())
}
