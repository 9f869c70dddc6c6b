//! The `fleetform serve` config file (YAML, read with the engine's loader so
//! that every problem points at a line). See docs/serve.md and examples/serve.yaml.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::notify::NotificationTarget;
use super::webhook::WebhookProvider;
use crate::diag::{Diagnostic, Span};
use crate::load::{self, SourceFile};
use crate::secret::SecretRef;
use crate::source::{SourceSpec, Verification};

/// Default listen address: loopback only; expose it deliberately.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9090";

/// A validated serve config.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// The fleet's name (events, metrics, state); default `fleet`.
    pub fleet: String,
    /// Where the manifest is.
    pub source: SourceSpec,
    /// How often to fetch the source when no webhook pokes (default 1 minute).
    pub poll_interval: Duration,
    /// Commit signature verification (off when absent).
    pub verification: Option<Verification>,
    /// Accept force-pushed branches (default false).
    pub allow_history_rewrite: bool,
    /// Push webhook, when configured.
    pub webhook: Option<WebhookConfig>,
    /// Drift detection schedule.
    pub drift: DriftConfig,
    /// HTTP listen address (webhook, /metrics, /healthz).
    pub listen: SocketAddr,
    /// Where to send events.
    pub notifications: Vec<NotificationTarget>,
    /// State directory (inventory, last applied revision, journal).
    pub state_dir: PathBuf,
    /// Git cache directory (default `<stateDir>/git`).
    pub cache_dir: PathBuf,
    /// Where relative `file:` secret references in the fleet and this config
    /// are resolved (default: the config file's directory).
    pub secrets_dir: PathBuf,
    /// Apply plans with deletes or replaces (default false: such a plan is
    /// reported as a failed reconcile and left for a person to apply).
    pub allow_destroy: bool,
}

/// The push webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// github or gitlab.
    pub provider: WebhookProvider,
    /// The shared secret (GitHub HMAC key / GitLab token).
    pub secret: SecretRef,
    /// URL path of the endpoint (default `/hooks/git`).
    #[serde(default = "default_webhook_path")]
    pub path: String,
}

fn default_webhook_path() -> String {
    "/hooks/git".into()
}

/// When drift is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftSchedule {
    /// Every so often.
    Interval(Duration),
    /// A 5-field cron expression (or `@hourly`-style macro), UTC; the
    /// daemon's scheduler interprets it.
    Cron(String),
    /// Drift is only checked as part of reconciles.
    Off,
}

/// Drift detection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftConfig {
    /// When.
    pub schedule: DriftSchedule,
    /// Re-apply the manifest when drift is found (default false: report only).
    pub self_heal: bool,
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationText {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDrift {
    #[serde(default)]
    interval: Option<DurationText>,
    #[serde(default)]
    cron: Option<String>,
    #[serde(default)]
    self_heal: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    fleet: Option<String>,
    source: SourceSpec,
    #[serde(default)]
    poll_interval: Option<DurationText>,
    #[serde(default)]
    verification: Option<Verification>,
    #[serde(default)]
    allow_history_rewrite: bool,
    #[serde(default)]
    webhook: Option<WebhookConfig>,
    #[serde(default)]
    drift: Option<RawDrift>,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    notifications: Vec<NotificationTarget>,
    state_dir: PathBuf,
    #[serde(default)]
    cache_dir: Option<PathBuf>,
    #[serde(default)]
    secrets_dir: Option<PathBuf>,
    #[serde(default)]
    allow_destroy: bool,
}

/// `90`, `30s`, `5m`, `1h30m`, `2d` → a duration.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !num.is_empty() {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// Whether `expr` is a cron expression the drift scheduler can run: 5
/// fields (minute hour day-of-month month day-of-week, UTC) or an `@hourly`-style macro.
pub fn valid_cron(expr: &str) -> bool {
    let expr = expr.trim();
    (expr.starts_with('@') || expr.split_whitespace().count() == 5) && parse_cron(expr).is_some()
}

/// Parses a cron expression (see [`valid_cron`]).
pub fn parse_cron(expr: &str) -> Option<croner::Cron> {
    expr.trim().parse::<croner::Cron>().ok()
}

struct Ctx<'a> {
    doc: &'a load::Document,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn at(&self, pointer: &str) -> Option<Span> {
        self.doc
            .spans
            .nearest(pointer)
            .or_else(|| self.doc.spans.span(""))
    }

    fn error(&mut self, pointer: &str, field: &str, summary: String, hint: &str) {
        let d = Diagnostic::error("serve-config", summary)
            .at(self.at(pointer))
            .field(field)
            .hint(hint);
        self.diags.push(d);
    }

    fn duration(
        &mut self,
        value: Option<DurationText>,
        pointer: &str,
        field: &str,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(DurationText::Seconds(s)) => Duration::from_secs(s),
            Some(DurationText::Text(t)) => match parse_duration(&t) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    self.error(
                        pointer,
                        field,
                        format!("`{t}` is not a duration"),
                        "write e.g. 30s, 5m, 1h30m",
                    );
                    default
                }
            },
        }
    }
}

impl ServeConfig {
    /// Reads and validates a config file.
    pub fn read(path: &Path) -> Result<Self, Vec<Diagnostic>> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            vec![Diagnostic::error(
                "serve-config",
                format!("cannot read serve config {name}: {e}"),
            )]
        })?;
        let mut cfg = Self::parse(&name, &bytes)?;
        // Relative paths are relative to the config file, like secret file references.
        if let Some(dir) = path.parent() {
            for p in [&mut cfg.state_dir, &mut cfg.cache_dir, &mut cfg.secrets_dir] {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(cfg)
    }

    /// Parses and validates a config from YAML bytes; `file` names it in diagnostics.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<Self, Vec<Diagnostic>> {
        let (docs, diags) = load::load(&[SourceFile {
            path: file.to_string(),
            bytes: bytes.to_vec(),
        }]);
        if !diags.is_empty() {
            return Err(diags);
        }
        let [doc] = docs.as_slice() else {
            return Err(vec![Diagnostic::error(
                "serve-config",
                format!(
                    "{file} must hold exactly one YAML document, found {}",
                    docs.len()
                ),
            )]);
        };
        let mut cx = Ctx {
            doc,
            diags: Vec::new(),
        };
        let raw: RawConfig = match serde_json::from_value(doc.value.clone()) {
            Ok(r) => r,
            Err(e) => {
                cx.error(
                    "",
                    "",
                    format!("invalid serve config: {e}"),
                    "see docs/serve.md for the fields",
                );
                return Err(cx.diags);
            }
        };
        if let Some(v) = &raw.api_version
            && v != "fleetform.dev/v1alpha1"
        {
            cx.error(
                "/apiVersion",
                "apiVersion",
                format!("unsupported apiVersion `{v}`"),
                "use fleetform.dev/v1alpha1",
            );
        }
        if let Some(k) = &raw.kind
            && k != "ServeConfig"
        {
            cx.error(
                "/kind",
                "kind",
                format!("kind is `{k}`, expected ServeConfig"),
                "set kind: ServeConfig",
            );
        }
        let poll_interval = cx.duration(
            raw.poll_interval,
            "/pollInterval",
            "pollInterval",
            Duration::from_secs(60),
        );
        let drift = match raw.drift {
            None => DriftConfig {
                schedule: DriftSchedule::Off,
                self_heal: false,
            },
            Some(d) => {
                let schedule = match (d.interval, d.cron) {
                    (Some(_), Some(_)) => {
                        cx.error(
                            "/drift",
                            "drift",
                            "drift has both interval and cron".into(),
                            "keep one of them",
                        );
                        DriftSchedule::Off
                    }
                    (Some(i), None) => DriftSchedule::Interval(cx.duration(
                        Some(i),
                        "/drift/interval",
                        "drift.interval",
                        Duration::from_secs(900),
                    )),
                    (None, Some(c)) if valid_cron(&c) => DriftSchedule::Cron(c.trim().to_string()),
                    (None, Some(c)) => {
                        cx.error(
                            "/drift/cron",
                            "drift.cron",
                            format!("`{c}` is not a cron expression"),
                            "five fields (minute hour day month weekday), e.g. \"*/15 * * * *\", or @hourly",
                        );
                        DriftSchedule::Off
                    }
                    (None, None) => DriftSchedule::Off,
                };
                DriftConfig {
                    schedule,
                    self_heal: d.self_heal,
                }
            }
        };
        let listen_text = raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = match listen_text.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                cx.error(
                    "/listen",
                    "listen",
                    format!("`{listen_text}` is not an address:port"),
                    "e.g. 127.0.0.1:9090",
                );
                // A placeholder; the config is refused anyway.
                SocketAddr::from(([127, 0, 0, 1], 9090))
            }
        };
        if let Some(w) = &raw.webhook
            && !w.path.starts_with('/')
        {
            cx.error(
                "/webhook/path",
                "webhook.path",
                format!("`{}` must start with /", w.path),
                "e.g. /hooks/git",
            );
        }
        for (i, n) in raw.notifications.iter().enumerate() {
            if !(n.url.starts_with("https://") || n.url.starts_with("http://")) {
                cx.error(
                    &format!("/notifications/{i}/url"),
                    &format!("notifications[{i}].url"),
                    "a notification URL must be http(s)".into(),
                    "e.g. https://hooks.example.com/fleetform",
                );
            }
        }
        if !cx.diags.is_empty() {
            crate::diag::sort(&mut cx.diags);
            return Err(cx.diags);
        }
        let cache_dir = raw.cache_dir.unwrap_or_else(|| raw.state_dir.join("git"));
        Ok(ServeConfig {
            fleet: raw.fleet.unwrap_or_else(|| "fleet".into()),
            source: raw.source,
            poll_interval,
            verification: raw.verification.filter(Verification::is_enabled),
            allow_history_rewrite: raw.allow_history_rewrite,
            webhook: raw.webhook,
            drift,
            listen,
            notifications: raw.notifications,
            state_dir: raw.state_dir,
            cache_dir,
            secrets_dir: raw.secrets_dir.unwrap_or_default(),
            allow_destroy: raw.allow_destroy,
        })
    }

    /// The source options this config implies (depth 1, its history-rewrite flag, default limits).
    pub fn source_options(&self) -> crate::source::SourceOptions {
        crate::source::SourceOptions {
            allow_history_rewrite: self.allow_history_rewrite,
            ..Default::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::source::GitRef;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("10m5"), None);
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../examples/serve.yaml");
        let cfg = ServeConfig::parse("examples/serve.yaml", text.as_bytes()).unwrap();
        assert_eq!(cfg.fleet, "prod");
        assert_eq!(cfg.source.reference, GitRef::Branch("main".into()));
        assert_eq!(cfg.poll_interval, Duration::from_secs(60));
        assert_eq!(
            cfg.webhook.as_ref().unwrap().provider,
            WebhookProvider::Github
        );
        assert_eq!(
            cfg.drift.schedule,
            DriftSchedule::Cron("*/15 * * * *".into())
        );
        assert!(!cfg.drift.self_heal);
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:9090");
        assert!(cfg.verification.is_some());
        assert_eq!(cfg.notifications.len(), 1);
        assert_eq!(cfg.cache_dir, PathBuf::from("/var/lib/fleetform/git"));
    }

    #[test]
    fn the_deployment_examples_config_is_valid() {
        let text = include_str!("../../../examples/deploy/serve.yaml");
        let (docs, diags) = load::load(&[SourceFile {
            path: "examples/deploy/serve.yaml".into(),
            bytes: text.as_bytes().to_vec(),
        }]);
        assert!(diags.is_empty(), "{diags:?}");
        let config = docs
            .iter()
            .find(|d| d.value["kind"] == "ConfigMap")
            .and_then(|d| d.value["data"]["serve.yaml"].as_str())
            .unwrap();
        let cfg = ServeConfig::parse("serve.yaml", config.as_bytes()).unwrap();
        assert_eq!(cfg.listen.port(), 9090);
        assert_eq!(cfg.secrets_dir, PathBuf::from("/etc/fleetform/secrets"));
        assert!(cfg.webhook.is_some() && cfg.verification.is_some());
    }

    #[test]
    fn a_minimal_config_gets_the_defaults() {
        let yaml = "apiVersion: fleetform.dev/v1alpha1\nkind: ServeConfig\nsource:\n  url: /srv/git/fleet\n  ref: {branch: main}\nstateDir: /var/lib/fleetform\n";
        let cfg = ServeConfig::parse("serve.yaml", yaml.as_bytes()).unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.poll_interval, Duration::from_secs(60));
        assert_eq!(cfg.drift.schedule, DriftSchedule::Off);
        assert!(cfg.webhook.is_none() && cfg.verification.is_none());
        assert_eq!(cfg.source.path, "");
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let yaml = "\
apiVersion: fleetform.dev/v1alpha1
kind: ServeConfig
source:
  url: /srv/git/fleet
  ref: {branch: main}
pollInterval: soon
drift:
  cron: every day
listen: localhost
stateDir: /var/lib/fleetform
";
        let diags = ServeConfig::parse("serve.yaml", yaml.as_bytes()).unwrap_err();
        let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
        assert_eq!(diags.len(), 3, "{text:#?}");
        assert!(
            text[0].starts_with("serve.yaml:6:") && text[0].contains("`soon` is not a duration"),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with("serve.yaml:8:") && text[1].contains("not a cron expression"),
            "{text:#?}"
        );
        assert!(
            text[2].starts_with("serve.yaml:9:") && text[2].contains("not an address:port"),
            "{text:#?}"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let yaml = "apiVersion: fleetform.dev/v1alpha1\nkind: ServeConfig\nsource:\n  url: x\n  ref: {branch: main}\nstateDir: /s\npollIntervall: 5m\n";
        let diags = ServeConfig::parse("serve.yaml", yaml.as_bytes()).unwrap_err();
        assert!(diags[0].summary.contains("pollIntervall"), "{diags:?}");
    }
}
