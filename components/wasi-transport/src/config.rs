//! The transport's configuration, read from `wasi:cli/environment` (under
//! `wasmtime serve`: the `--env` flags):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DAVSYNC_REMOTE_URL` | the WebDAV root, `http(s)://host[:port]/path/` | required |
//! | `DAVSYNC_REMOTE_USER` | Basic auth user (or user info in the URL) | none |
//! | `DAVSYNC_REMOTE_PASSWORD` | Basic auth password | none |
//! | `DAVSYNC_HTTP_TIMEOUT_MS` | first-byte and between-bytes timeout | 60000 |
//! | `DAVSYNC_HTTP_CONNECT_TIMEOUT_MS` | connect timeout | 10000 |
//!
//! The password travels only in the `Authorization` header: no message and no
//! `Debug` output contains it.

use std::fmt;

use percent_encoding::percent_decode_str;

/// Why the configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConfigError {
    /// `DAVSYNC_REMOTE_URL` is not set (or empty).
    MissingUrl,
    /// The URL is not `http(s)://host[:port][/path]`: why.
    BadUrl(String),
    /// A number variable does not parse: its name and value.
    BadNumber(&'static str, String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::MissingUrl => {
                f.write_str("DAVSYNC_REMOTE_URL is not set: the WebDAV root to look after")
            }
            ConfigError::BadUrl(why) => write!(f, "DAVSYNC_REMOTE_URL is unusable: {why}"),
            ConfigError::BadNumber(name, value) => {
                write!(f, "{name}={value:?} is not a number of milliseconds")
            }
        }
    }
}

/// Where the server is and how to talk to it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Config {
    /// `http` or `https`.
    pub(crate) https: bool,
    /// `host[:port]`, no user info.
    pub(crate) authority: String,
    /// The root's path, as given (percent-encoded), starting and ending with `/`.
    pub(crate) base_path: String,
    /// `Basic …`, when credentials are configured.
    pub(crate) authorization: Option<String>,
    pub(crate) timeout_ms: u64,
    pub(crate) connect_timeout_ms: u64,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("https", &self.https)
            .field("authority", &self.authority)
            .field("base_path", &self.base_path)
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .field("timeout_ms", &self.timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

impl Config {
    /// The configuration from environment variables `(name, value)`.
    pub(crate) fn from_env(vars: &[(String, String)]) -> Result<Config, ConfigError> {
        let var = |name: &str| {
            vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
        };
        let ms = |name: &'static str, default: u64| match var(name) {
            None => Ok(default),
            Some(v) => v.trim().parse::<u64>().map_err(|_| ConfigError::BadNumber(name, v.to_owned())),
        };
        let url = var("DAVSYNC_REMOTE_URL").ok_or(ConfigError::MissingUrl)?;
        let (scheme, rest) = url.split_once("://").ok_or_else(|| ConfigError::BadUrl("no scheme".into()))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => return Err(ConfigError::BadUrl(format!("scheme {other:?} is not http or https"))),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if host.is_empty() || host.contains(['?', '#', ' ']) {
            return Err(ConfigError::BadUrl("no usable host".into()));
        }
        if path.contains(['?', '#']) {
            return Err(ConfigError::BadUrl("a query or fragment is not allowed".into()));
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let (url_user, url_pass) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                (Some(decode(user)), Some(decode(pass)))
            }
        };
        let user = var("DAVSYNC_REMOTE_USER").map(str::to_owned).or(url_user);
        let pass = var("DAVSYNC_REMOTE_PASSWORD").map(str::to_owned).or(url_pass).unwrap_or_default();
        let authorization = user.map(|user| {
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            format!("Basic {token}")
        });
        let path = path.trim_matches('/');
        let base_path = if path.is_empty() { "/".to_owned() } else { format!("/{path}/") };
        Ok(Config {
            https,
            authority: host.to_owned(),
            base_path,
            authorization,
            timeout_ms: ms("DAVSYNC_HTTP_TIMEOUT_MS", 60_000)?,
            connect_timeout_ms: ms("DAVSYNC_HTTP_CONNECT_TIMEOUT_MS", 10_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn url_credentials_and_timeouts() {
        let c =
            Config::from_env(&env(&[("DAVSYNC_REMOTE_URL", "http://ann:s%40cret@127.0.0.1:8080/dav/root")]))
                .unwrap();
        assert!(!c.https);
        assert_eq!((c.authority.as_str(), c.base_path.as_str()), ("127.0.0.1:8080", "/dav/root/"));
        assert_eq!(c.authorization.as_deref(), Some("Basic YW5uOnNAY3JldA=="));
        assert_eq!((c.timeout_ms, c.connect_timeout_ms), (60_000, 10_000));
        assert!(!format!("{c:?}").contains("YW5u"), "Debug shows no credentials");

        let c = Config::from_env(&env(&[
            ("DAVSYNC_REMOTE_URL", "HTTPS://dav.example"),
            ("DAVSYNC_REMOTE_USER", "bob"),
            ("DAVSYNC_HTTP_TIMEOUT_MS", "500"),
        ]))
        .unwrap();
        assert!(c.https);
        assert_eq!(c.base_path, "/");
        assert_eq!(c.authorization.as_deref(), Some("Basic Ym9iOg=="));
        assert_eq!(c.timeout_ms, 500);
    }

    #[test]
    fn bad_configuration_is_a_typed_error() {
        assert_eq!(Config::from_env(&[]), Err(ConfigError::MissingUrl));
        assert!(matches!(
            Config::from_env(&env(&[("DAVSYNC_REMOTE_URL", "ftp://h/")])),
            Err(ConfigError::BadUrl(_))
        ));
        assert!(matches!(
            Config::from_env(&env(&[("DAVSYNC_REMOTE_URL", "http:///x")])),
            Err(ConfigError::BadUrl(_))
        ));
        assert!(matches!(
            Config::from_env(&env(&[
                ("DAVSYNC_REMOTE_URL", "http://h/"),
                ("DAVSYNC_HTTP_TIMEOUT_MS", "soon")
            ])),
            Err(ConfigError::BadNumber("DAVSYNC_HTTP_TIMEOUT_MS", _))
        ));
    }
}
