//! The routing table: which module serves a request, by host and path
//! prefix.

pub use comet_config::spec::Route;

/// Routes, tried host-specific first, then longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// A table of `routes`.
    pub fn new(mut routes: Vec<Route>) -> Routes {
        for r in &mut routes {
            r.host = r.host.take().map(|h| h.to_ascii_lowercase());
        }
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        Routes { routes }
    }

    /// Every route.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The module for a request to `host` (a Host header, port allowed) and
    /// `path`.
    pub fn resolve(&self, host: Option<&str>, path: &str) -> Option<&str> {
        let host = host.map(|h| strip_port(h).to_ascii_lowercase());
        self.routes
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|want| host.as_deref() == Some(want))
                    && prefix_matches(&r.prefix, path)
            })
            .map(|r| r.module.as_str())
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [::1]:8080
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: &str, module: &str) -> Route {
        Route {
            host: host.map(String::from),
            prefix: prefix.into(),
            module: module.into(),
        }
    }

    #[test]
    fn longest_prefix_and_host_win() {
        let routes = Routes::new(vec![
            route(None, "/", "site"),
            route(None, "/api", "api"),
            route(None, "/api/v2/", "api2"),
            route(Some("Chat.Example.com"), "/", "chat"),
        ]);
        assert_eq!(routes.resolve(Some("x.org"), "/"), Some("site"));
        assert_eq!(routes.resolve(None, "/api"), Some("api"));
        assert_eq!(routes.resolve(None, "/api/users"), Some("api"));
        assert_eq!(routes.resolve(None, "/apix"), Some("site"));
        assert_eq!(routes.resolve(None, "/api/v2/x"), Some("api2"));
        assert_eq!(
            routes.resolve(Some("chat.example.com:8080"), "/api"),
            Some("chat")
        );
        assert_eq!(routes.resolve(Some("[::1]:80"), "/"), Some("site"));
    }

    #[test]
    fn no_match_is_none() {
        let routes = Routes::new(vec![route(None, "/only", "m")]);
        assert_eq!(routes.resolve(None, "/other"), None);
    }
}
