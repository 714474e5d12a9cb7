//! The app manifest (`comet run --config app.toml`): modules, routes, channel
//! namespaces, limits, grants, broker and listeners. Parsing refuses unknown
//! keys and bad values with the file, line and reason. `app.example.toml` at
//! the repository root documents every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use comet_wire::forwarded::Header as ForwardedHeader;
use comet_wire::origin::Allowed;
use ipnet::IpNet;

use crate::broker::{BrokerSpec, DEFAULT_PREFIX, check_redis_url};
use crate::limits::Limits;
use crate::spec::{HistoryLimits, ModuleSpec, Route, validate_module_name};

/// A manifest error: where, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The reason.
    pub message: String,
}

/// A parsed and checked manifest.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// Public listener.
    pub listen: Option<SocketAddr>,
    /// Admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// Uploaded modules and the compile cache live here.
    pub data_dir: Option<PathBuf>,
    /// Client connections held at once.
    pub max_connections: Option<usize>,
    /// Per-connection queue length.
    pub queue_len: Option<usize>,
    /// Origins whose pages may open a WebSocket and read the streams and
    /// polls (CORS), besides the server's own.
    pub allowed_origins: Vec<Allowed>,
    /// Whether allowed origins may send cookies (CORS with credentials).
    pub allow_credentials: bool,
    /// TLS on the public listener (`[tls]`); `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// TLS on the admin listener (`[admin_tls]`); `None`: plain HTTP.
    pub admin_tls: Option<TlsFiles>,
    /// Proxies whose word on the client's address is taken.
    pub trusted_proxies: Vec<IpNet>,
    /// Trusted proxies send a PROXY protocol header first.
    pub proxy_protocol: bool,
    /// The header trusted proxies name the client in.
    pub forwarded_header: ForwardedHeader,
    /// Agree to permessage-deflate with WebSocket clients (`None`: the
    /// default, on).
    pub ws_compression: Option<bool>,
    /// The server API's bearer key (`--api-key` and `COMET_API_KEY` win).
    pub api_key: Option<String>,
    /// The module running the `/comet/` endpoints' connection hooks.
    pub channel_module: Option<String>,
    /// History limits of channels in no listed namespace.
    pub default_history: Option<HistoryLimits>,
    /// Whether clients may publish to channels in no listed namespace.
    pub client_publish: bool,
    /// Bytes of history kept in all channels (memory broker).
    pub history_bytes: Option<usize>,
    /// Channels known at once (memory broker).
    pub max_channels: Option<usize>,
    /// Where channels live.
    pub broker: BrokerSpec,
    /// Channel namespaces.
    pub namespaces: BTreeMap<String, NamespaceSpec>,
    /// Modules by name.
    pub modules: BTreeMap<String, ModuleEntry>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
}

/// The PEM files a listener's certificate comes from (`[tls]`, or
/// `--tls-cert` and `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// One `[modules.NAME]` entry.
#[derive(Debug, Clone, Default)]
pub struct ModuleEntry {
    /// A `.wasm` or guest crate directory (relative paths are resolved
    /// against the manifest's directory); `None`: deployed by upload.
    pub path: Option<PathBuf>,
    /// Limits and grants.
    pub spec: ModuleSpec,
}

/// One `[namespaces.NAME]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSpec {
    /// History kept per channel.
    pub history: HistoryLimits,
    /// Whether WebSocket clients may publish.
    pub client_publish: bool,
    /// Module whose on-subscribe and on-publish apply.
    pub hooks: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    admin_tls: Option<RawTls>,
    #[serde(default)]
    broker: Option<Spanned<RawBroker>>,
    #[serde(default)]
    channels: RawChannels,
    #[serde(default)]
    namespaces: BTreeMap<Spanned<String>, RawNamespace>,
    #[serde(default)]
    modules: BTreeMap<Spanned<String>, RawModule>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    max_connections: Option<usize>,
    queue_len: Option<Spanned<usize>>,
    #[serde(default)]
    allowed_origins: Vec<Spanned<String>>,
    #[serde(default)]
    allow_credentials: bool,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    proxy_protocol: Option<Spanned<bool>>,
    forwarded_header: Option<Spanned<String>>,
    ws_compression: Option<bool>,
    api_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
enum RawBroker {
    Memory,
    Redis { url: String, prefix: Option<String> },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannels {
    hooks: Option<Spanned<String>>,
    history_len: Option<usize>,
    history_age_s: Option<u64>,
    #[serde(default)]
    client_publish: bool,
    history_mib: Option<Spanned<usize>>,
    max_channels: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    history_len: Option<usize>,
    history_age_s: Option<u64>,
    #[serde(default)]
    client_publish: bool,
    hooks: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    path: Option<PathBuf>,
    deadline_ms: Option<Spanned<u64>>,
    cpu_ms: Option<Spanned<u64>>,
    max_concurrent: Option<Spanned<usize>>,
    memory_mib: Option<Spanned<usize>>,
    events_per_instance: Option<Spanned<u32>>,
    max_request_body: Option<usize>,
    max_response_body: Option<usize>,
    #[serde(default = "yes")]
    kv: bool,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Spanned<String>,
    module: Spanned<String>,
    host: Option<String>,
}

/// A trusted proxy's block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
pub fn parse_block(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not an address or a CIDR block (10.0.0.0/8, ::1)"))
}

impl Manifest {
    /// Read and check the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read: {e}"),
        })?;
        Manifest::parse(&text, path)
    }

    /// Parse and check manifest `text`; `path` names it in errors and
    /// anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let fail = |span: Option<std::ops::Range<usize>>, message: String| {
            let offset = span.map_or(0, |s| s.start).min(text.len());
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            ManifestError {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw: Raw =
            toml::from_str(text).map_err(|e| fail(e.span(), e.message().trim().to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));

        let broker = match raw.broker {
            None => BrokerSpec::Memory,
            Some(spanned) => {
                let span = spanned.span();
                match spanned.into_inner() {
                    RawBroker::Memory => BrokerSpec::Memory,
                    RawBroker::Redis { url, prefix } => {
                        check_redis_url(&url).map_err(|e| fail(Some(span.clone()), e))?;
                        let prefix = prefix.unwrap_or_else(|| DEFAULT_PREFIX.into());
                        if prefix.is_empty() || prefix.contains(['{', '}', ' ']) {
                            return Err(fail(
                                Some(span),
                                "prefix must be non-empty, without spaces or braces".into(),
                            ));
                        }
                        BrokerSpec::Redis { url, prefix }
                    }
                }
            }
        };
        for (value, what) in [
            (&raw.server.queue_len, "queue_len"),
            (&raw.channels.history_mib, "history_mib"),
            (&raw.channels.max_channels, "max_channels"),
        ] {
            if let Some(v) = value
                && *v.get_ref() == 0
            {
                return Err(fail(Some(v.span()), format!("{what} must be at least 1")));
            }
        }

        let mut allowed_origins = Vec::new();
        for rule in &raw.server.allowed_origins {
            let allowed = Allowed::parse(rule.get_ref())
                .map_err(|e| fail(Some(rule.span()), e.to_string()))?;
            allowed_origins.push(allowed);
        }
        let any = raw
            .server
            .allowed_origins
            .iter()
            .find(|r| r.get_ref() == "*");
        if let (true, Some(any)) = (raw.server.allow_credentials, any) {
            return Err(fail(
                Some(any.span()),
                "allow_credentials cannot go with allowed_origins = [\"*\"]: list the origins that may send cookies".into(),
            ));
        }

        let mut trusted_proxies = Vec::new();
        for block in &raw.server.trusted_proxies {
            let net = parse_block(block.get_ref()).map_err(|e| fail(Some(block.span()), e))?;
            trusted_proxies.push(net);
        }
        let proxy_protocol = raw.server.proxy_protocol.as_ref();
        if let (Some(on), true) = (proxy_protocol, trusted_proxies.is_empty())
            && *on.get_ref()
        {
            return Err(fail(
                Some(on.span()),
                "proxy_protocol needs trusted_proxies: the header is read only from them".into(),
            ));
        }

        let forwarded_header = match &raw.server.forwarded_header {
            Some(name) => name
                .get_ref()
                .parse::<ForwardedHeader>()
                .map_err(|e| fail(Some(name.span()), e))?,
            None => ForwardedHeader::default(),
        };

        let mut modules = BTreeMap::new();
        for (name, m) in raw.modules {
            validate_module_name(name.get_ref())
                .map_err(|e| fail(Some(name.span()), e.to_string()))?;
            let mut limits = Limits::default();
            if let Some(ms) = m.deadline_ms {
                if *ms.get_ref() == 0 {
                    return Err(fail(
                        Some(ms.span()),
                        "deadline_ms must be at least 1".into(),
                    ));
                }
                limits.deadline = Duration::from_millis(*ms.get_ref());
            }
            if let Some(ms) = m.cpu_ms {
                if *ms.get_ref() == 0 {
                    return Err(fail(Some(ms.span()), "cpu_ms must be at least 1".into()));
                }
                limits.cpu = Duration::from_millis(*ms.get_ref());
            }
            if let Some(n) = m.max_concurrent {
                if *n.get_ref() == 0 {
                    return Err(fail(
                        Some(n.span()),
                        "max_concurrent must be at least 1".into(),
                    ));
                }
                limits.max_concurrent = *n.get_ref();
            }
            if let Some(mib) = m.memory_mib {
                if !(1..=4096).contains(mib.get_ref()) {
                    return Err(fail(
                        Some(mib.span()),
                        "memory_mib must be between 1 and 4096".into(),
                    ));
                }
                limits.memory_bytes = *mib.get_ref() << 20;
            }
            if let Some(n) = m.events_per_instance {
                if *n.get_ref() == 0 {
                    return Err(fail(
                        Some(n.span()),
                        "events_per_instance must be at least 1 (1: a fresh instance per event)"
                            .into(),
                    ));
                }
                limits.events_per_instance = *n.get_ref();
            }
            if let Some(b) = m.max_request_body {
                limits.max_request_body = b;
            }
            if let Some(b) = m.max_response_body {
                limits.max_response_body = b;
            }
            let entry = ModuleEntry {
                path: m.path.map(|p| base.join(p)),
                spec: ModuleSpec {
                    limits,
                    kv: m.kv,
                    config: m.config,
                },
            };
            modules.insert(name.into_inner(), entry);
        }
        let known = |name: &Spanned<String>| {
            if modules.contains_key(name.get_ref()) {
                Ok(name.get_ref().clone())
            } else {
                let listed: Vec<&str> = modules.keys().map(String::as_str).collect();
                Err(fail(
                    Some(name.span()),
                    format!(
                        "no module named {:?} (modules: {})",
                        name.get_ref(),
                        if listed.is_empty() {
                            "none".to_string()
                        } else {
                            listed.join(", ")
                        }
                    ),
                ))
            }
        };

        let mut routes = Vec::new();
        for r in &raw.routes {
            let prefix = r.prefix.get_ref();
            if !prefix.starts_with('/') {
                return Err(fail(
                    Some(r.prefix.span()),
                    "a route prefix starts with /".into(),
                ));
            }
            if prefix.trim_end_matches('/') == "/comet"
                || prefix.starts_with(comet_wire::ENDPOINT_PREFIX)
            {
                return Err(fail(
                    Some(r.prefix.span()),
                    "/comet/ is reserved for the built-in endpoints".into(),
                ));
            }
            routes.push(Route {
                host: r.host.clone(),
                prefix: prefix.clone(),
                module: known(&r.module)?,
            });
        }
        if routes.is_empty() && modules.len() == 1 {
            let only = modules.keys().next().cloned().unwrap_or_default();
            routes.push(Route {
                host: None,
                prefix: "/".into(),
                module: only,
            });
        }

        let channel_module = match &raw.channels.hooks {
            Some(name) => Some(known(name)?),
            None => routes
                .iter()
                .find(|r| r.host.is_none() && r.prefix == "/")
                .map(|r| r.module.clone())
                .or_else(|| {
                    (modules.len() == 1)
                        .then(|| modules.keys().next().cloned())
                        .flatten()
                }),
        };

        let history = |len: Option<usize>, age: Option<u64>| {
            let d = HistoryLimits::default();
            HistoryLimits {
                max_len: len.unwrap_or(d.max_len),
                max_age: age.map_or(d.max_age, Duration::from_secs),
            }
        };
        let default_history = (raw.channels.history_len.is_some()
            || raw.channels.history_age_s.is_some())
        .then(|| history(raw.channels.history_len, raw.channels.history_age_s));
        let mut namespaces = BTreeMap::new();
        for (name, ns) in raw.namespaces {
            let n = name.get_ref();
            if n.is_empty() || n.contains(':') || comet_wire::name::validate(n).is_err() {
                return Err(fail(
                    Some(name.span()),
                    format!("{n:?} is not a namespace: use the channel-name alphabet, without ':'"),
                ));
            }
            let hooks = ns.hooks.as_ref().map(known).transpose()?;
            namespaces.insert(
                name.into_inner(),
                NamespaceSpec {
                    history: history(ns.history_len, ns.history_age_s),
                    client_publish: ns.client_publish,
                    hooks,
                },
            );
        }

        Ok(Manifest {
            listen: raw.server.listen,
            admin_listen: raw.server.admin_listen,
            data_dir: raw.server.data_dir.map(|d| base.join(d)),
            max_connections: raw.server.max_connections,
            queue_len: raw.server.queue_len.map(Spanned::into_inner),
            allowed_origins,
            allow_credentials: raw.server.allow_credentials,
            trusted_proxies,
            proxy_protocol: raw.server.proxy_protocol.is_some_and(|on| on.into_inner()),
            forwarded_header,
            ws_compression: raw.server.ws_compression,
            api_key: raw.server.api_key.filter(|k| !k.is_empty()),
            tls: raw.tls.map(|t| TlsFiles {
                cert: base.join(t.cert),
                key: base.join(t.key),
            }),
            admin_tls: raw.admin_tls.map(|t| TlsFiles {
                cert: base.join(t.cert),
                key: base.join(t.key),
            }),
            channel_module,
            default_history,
            client_publish: raw.channels.client_publish,
            history_bytes: raw.channels.history_mib.map(|m| m.into_inner() << 20),
            max_channels: raw.channels.max_channels.map(Spanned::into_inner),
            broker,
            namespaces,
            modules,
            routes,
        })
    }

    /// Modules that routes and channel hooks depend on, and how.
    pub fn uses(&self) -> BTreeMap<String, String> {
        let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &self.routes {
            let host = r
                .host
                .as_deref()
                .map(|h| format!("{h} "))
                .unwrap_or_default();
            uses.entry(r.module.clone())
                .or_default()
                .push(format!("route {host}{}", r.prefix));
        }
        if let Some(m) = &self.channel_module {
            uses.entry(m.clone())
                .or_default()
                .push("the /comet/ endpoints".into());
        }
        for (ns, spec) in &self.namespaces {
            if let Some(m) = &spec.hooks {
                uses.entry(m.clone())
                    .or_default()
                    .push(format!("namespace {ns}"));
            }
        }
        uses.into_iter().map(|(m, u)| (m, u.join(", "))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("/app/app.toml"))
    }

    #[test]
    fn the_example_parses() {
        let text = include_str!("../../app.example.toml");
        let m = parse(text).unwrap();
        assert!(m.modules.contains_key("chat"));
        assert_eq!(m.channel_module.as_deref(), Some("chat"));
        assert!(!m.routes.is_empty());
    }

    #[test]
    fn one_module_gets_the_root_route_and_the_channels() {
        let m = parse("[modules.hello]\npath = \"hello.wasm\"\n").unwrap();
        assert_eq!(m.routes.len(), 1);
        assert_eq!(m.routes[0].prefix, "/");
        assert_eq!(m.channel_module.as_deref(), Some("hello"));
        assert_eq!(
            m.modules["hello"].path.as_deref(),
            Some(Path::new("/app/hello.wasm"))
        );
    }

    #[test]
    fn errors_name_file_line_and_reason() {
        let e = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(e.to_string().starts_with("/app/app.toml:3:1:"), "{e}");
        assert!(e.message.contains("unknown field `lisen`"), "{e}");

        let e = parse("[modules.a]\n[[routes]]\nprefix = \"/\"\nmodule = \"b\"\n").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("no module named \"b\""), "{e}");

        let e = parse("[modules.a]\ndeadline_ms = 0\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");

        let e = parse("[modules.a]\nmemory_mib = \"big\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");

        let e = parse("[modules.a]\nevents_per_instance = 0\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("a fresh instance per event"), "{e}");
        let m = parse("[modules.a]\nevents_per_instance = 1\n").unwrap();
        assert_eq!(m.modules["a"].spec.limits.events_per_instance, 1);

        let e = parse("[modules.Bad]\n").unwrap_err();
        assert!(e.message.contains("invalid module name"), "{e}");

        let e =
            parse("[modules.a]\n[[routes]]\nprefix = \"/comet/x\"\nmodule = \"a\"\n").unwrap_err();
        assert!(e.message.contains("reserved"), "{e}");

        let e = parse("[broker]\nkind = \"redis\"\nurl = \"http://x\"\n").unwrap_err();
        assert!(e.message.contains("not a Redis URL"), "{e}");
        let m = parse("[broker]\nkind = \"redis\"\nurl = \"redis://x:1/2\"\nprefix = \"app\"\n")
            .unwrap();
        assert_eq!(
            m.broker,
            BrokerSpec::Redis {
                url: "redis://x:1/2".into(),
                prefix: "app".into()
            }
        );

        let e = parse("[namespaces.\"a:b\"]\n").unwrap_err();
        assert!(e.message.contains("not a namespace"), "{e}");
    }

    #[test]
    fn allowed_origins_are_checked_where_they_are_written() {
        let m = parse(
            "[server]\nallowed_origins = [\"https://app.example\", \"https://*.example.org\"]\n\
             allow_credentials = true\n",
        )
        .unwrap();
        assert_eq!(m.allowed_origins.len(), 2);
        assert!(m.allow_credentials);
        let e =
            parse("[server]\nallowed_origins = [\"https://a\",\n  \"app.example\"]\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("not an origin"), "{e}");
        let e =
            parse("[server]\nallow_credentials = true\nallowed_origins = [\"*\"]\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("cannot go with"), "{e}");
    }

    #[test]
    fn tls_files_are_relative_to_the_manifest() {
        let m = Manifest::parse(
            "[tls]\ncert = \"certs/rt.pem\"\nkey = \"/etc/rt.key\"\n",
            Path::new("/srv/app/app.toml"),
        )
        .unwrap();
        let tls = m.tls.unwrap();
        assert_eq!(tls.cert, Path::new("/srv/app/certs/rt.pem"));
        assert_eq!(tls.key, Path::new("/etc/rt.key"));
        let m = parse("[admin_tls]\ncert = \"admin.pem\"\nkey = \"admin.key\"\n").unwrap();
        assert_eq!(m.admin_tls.unwrap().cert, Path::new("/app/admin.pem"));
        assert!(m.tls.is_none());
        let e = parse("[tls]\ncert = \"rt.pem\"\n").unwrap_err();
        assert!(e.message.contains("missing field `key`"), "{e}");
    }

    #[test]
    fn trusted_proxies_are_blocks_or_addresses() {
        let m =
            parse("[server]\ntrusted_proxies = [\"10.1.2.3/8\", \"::1\"]\nproxy_protocol = true\n")
                .unwrap();
        let shown: Vec<String> = m.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "::1/128"]);
        assert!(m.proxy_protocol);
        assert_eq!(m.forwarded_header, ForwardedHeader::XForwardedFor);
        let m = parse("[server]\nforwarded_header = \"Forwarded\"\n").unwrap();
        assert_eq!(m.forwarded_header, ForwardedHeader::Forwarded);
        let e = parse("[server]\nforwarded_header = \"x-real-ip\"\n").unwrap_err();
        assert!(
            e.message.contains("expected x-forwarded-for or forwarded"),
            "{e}"
        );
        let e = parse("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(e.message.contains("not an address or a CIDR block"), "{e}");
        let e = parse("[server]\nproxy_protocol = true\n").unwrap_err();
        assert!(e.message.contains("needs trusted_proxies"), "{e}");
    }
}
