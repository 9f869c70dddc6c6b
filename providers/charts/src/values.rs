//! A chart's `values.schema.json`, checked before anything is rendered, so that `fleetform
//! validate` reports a value the chart rejects at the manifest line that sets it. Helm checks
//! the same schemas when it renders (the renderer does too, at plan time); this is the earlier,
//! located check. Like Helm, the values checked are the chart's defaults coalesced with the
//! release's values, and every enabled subchart is checked against its own schema with its
//! part of the values.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value};

/// A value the chart's schema rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the release's values (`/node-feature-discovery/gc/enable`).
    pub pointer: String,
    /// What the schema says, e.g. `"yes" is not of type "boolean"`.
    pub message: String,
}

/// The files of a chart that the check reads, by path inside the chart (`Chart.yaml`,
/// `charts/node-feature-discovery/values.schema.json`); packaged subcharts are unpacked
/// into the same tree.
#[derive(Default)]
struct ChartFiles(BTreeMap<String, Vec<u8>>);

/// The files the check needs: everything else (templates) is skipped.
fn wanted(path: &str) -> bool {
    path.ends_with("Chart.yaml")
        || path.ends_with("values.yaml")
        || path.ends_with("values.schema.json")
        || path.ends_with(".tgz")
}

impl ChartFiles {
    /// Reads a chart directory or package (`.tgz`).
    fn read(path: &Path) -> Result<Self, String> {
        let mut files = ChartFiles::default();
        if path.is_dir() {
            files.read_dir(path, path)?;
        } else {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.read_package(&bytes, "")?;
        }
        files.unpack_subcharts()?;
        Ok(files)
    }

    fn read_dir(&mut self, root: &Path, dir: &Path) -> Result<(), String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            let path = entry.path();
            // Symlinks are not followed: a chart never reaches outside itself.
            if kind.is_dir() {
                self.read_dir(root, &path)?;
            } else if kind.is_file()
                && let Ok(rel) = path.strip_prefix(root)
            {
                let rel = rel.to_string_lossy().replace('\\', "/");
                if wanted(&rel) {
                    let bytes =
                        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    self.0.insert(rel, bytes);
                }
            }
        }
        Ok(())
    }

    /// Adds a package's files under `prefix`, without its top directory (`gpu-operator/`).
    fn read_package(&mut self, bytes: &[u8], prefix: &str) -> Result<(), String> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        let entries = archive
            .entries()
            .map_err(|e| format!("not a chart package: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("not a chart package: {e}"))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            let Some((_, rel)) = path.split_once('/') else {
                continue;
            };
            if !wanted(rel) || rel.split('/').any(|s| s == "..") {
                continue;
            }
            let mut out = Vec::new();
            // Bounded: a schema or values file is small, a hostile package is not read whole.
            entry
                .by_ref()
                .take(64 << 20)
                .read_to_end(&mut out)
                .map_err(|e| format!("{path}: {e}"))?;
            self.0.insert(format!("{prefix}{rel}"), out);
        }
        Ok(())
    }

    /// Subcharts shipped packaged (`charts/<name>-<version>.tgz`) are unpacked to
    /// `charts/<name>/`, where directory subcharts already are.
    fn unpack_subcharts(&mut self) -> Result<(), String> {
        loop {
            let Some(path) = self.0.keys().find(|p| p.ends_with(".tgz")).cloned() else {
                return Ok(());
            };
            let bytes = self.0.remove(&path).unwrap_or_default();
            let mut sub = ChartFiles::default();
            sub.read_package(&bytes, "")?;
            let name = sub
                .yaml("Chart.yaml")?
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("{path}: Chart.yaml has no name"))?;
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            for (rel, bytes) in sub.0 {
                self.0.insert(format!("{dir}/{name}/{rel}"), bytes);
            }
        }
    }

    fn yaml(&self, path: &str) -> Result<Value, String> {
        match self.0.get(path) {
            None => Ok(Value::Null),
            Some(bytes) => {
                let text = std::str::from_utf8(bytes).map_err(|e| format!("{path}: {e}"))?;
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                // Charts comment their values at length (node-feature-discovery's run past
                // the parser's comment look-ahead budget); comments carry nothing here.
                let mut options = serde_saphyr::Options::default();
                options.emit_comments = false;
                serde_saphyr::from_str_with_options::<Value>(text, options)
                    .map_err(|e| format!("{path}: {e}"))
            }
        }
    }
}

/// One chart of the tree: its default values, its schema, its subcharts.
struct Chart {
    defaults: Value,
    schema: Option<Value>,
    /// (values key: alias or name, condition, subchart)
    dependencies: Vec<(String, Option<String>, Chart)>,
}

impl Chart {
    fn load(files: &ChartFiles, dir: &str) -> Result<Self, String> {
        let meta = files.yaml(&format!("{dir}Chart.yaml"))?;
        let schema = match files.0.get(&format!("{dir}values.schema.json")) {
            Some(bytes) => Some(
                serde_json::from_slice(bytes)
                    .map_err(|e| format!("{dir}values.schema.json: {e}"))?,
            ),
            None => None,
        };
        let mut dependencies = Vec::new();
        for d in meta
            .get("dependencies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = d.get("name").and_then(Value::as_str) else {
                continue;
            };
            let sub = format!("{dir}charts/{name}/");
            // A dependency the chart does not ship is the renderer's concern (it drops a
            // disabled one and reports a missing enabled one).
            if !files.0.contains_key(&format!("{sub}Chart.yaml")) {
                continue;
            }
            let key = d.get("alias").and_then(Value::as_str).unwrap_or(name);
            let condition = d
                .get("condition")
                .and_then(Value::as_str)
                .map(str::to_string);
            dependencies.push((key.to_string(), condition, Chart::load(files, &sub)?));
        }
        Ok(Chart {
            defaults: files.yaml(&format!("{dir}values.yaml"))?,
            schema,
            dependencies,
        })
    }

    /// Checks `values` (already coalesced with this chart's defaults) and every enabled
    /// subchart's part of them.
    fn check(&self, values: &Value, at: &str, out: &mut Vec<Violation>) -> Result<(), String> {
        if let Some(schema) = &self.schema {
            let validator = jsonschema::validator_for(schema)
                .map_err(|e| format!("the chart's values.schema.json{at} does not compile: {e}"))?;
            for e in validator.iter_errors(values) {
                out.push(Violation {
                    pointer: format!("{at}{}", e.instance_path().as_str()),
                    message: e.to_string(),
                });
            }
        }
        for (key, condition, sub) in &self.dependencies {
            if !enabled(condition.as_deref(), values) {
                continue;
            }
            let mut sub_values = sub.defaults.clone();
            if let Some(mine) = values.get(key) {
                coalesce(&mut sub_values, mine);
            }
            // Globals flow down (Helm copies the parent's `global` into each subchart).
            if let Some(global) = values.get("global") {
                let mut g = sub_values.get("global").cloned().unwrap_or(Value::Null);
                coalesce(&mut g, global);
                if let Value::Object(m) = &mut sub_values {
                    m.insert("global".into(), g);
                }
            }
            sub.check(&sub_values, &format!("{at}/{}", escape(key)), out)?;
        }
        Ok(())
    }
}

/// Helm's dependency condition: the first of its comma-separated paths that holds a boolean
/// decides; none does, the subchart is enabled.
fn enabled(condition: Option<&str>, values: &Value) -> bool {
    let Some(condition) = condition else {
        return true;
    };
    for path in condition.split(',').map(str::trim) {
        let found = path
            .split('.')
            .try_fold(values, |v, key| v.get(key))
            .and_then(Value::as_bool);
        if let Some(b) = found {
            return b;
        }
    }
    true
}

/// Helm's coalescing: `over`'s values win, maps merge key by key, and a null removes the
/// default.
fn coalesce(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(existing) = b.get_mut(k) {
                    coalesce(existing, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Checks a release's values against its chart's schemas (the chart's and its enabled
/// subcharts'). `Err` when the chart cannot be read or a schema does not compile.
pub fn check(chart: &Path, values: &Value) -> Result<Vec<Violation>, String> {
    let files = ChartFiles::read(chart)?;
    let root = Chart::load(&files, "")?;
    let mut coalesced = match &root.defaults {
        Value::Null => Value::Object(Map::new()),
        d => d.clone(),
    };
    coalesce(&mut coalesced, values);
    let mut out = Vec::new();
    root.check(&coalesced, "", &mut out)?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coalescing_merges_maps_and_a_null_removes_a_default() {
        let mut base = json!({"a": {"x": 1, "y": 2}, "b": [1]});
        coalesce(&mut base, &json!({"a": {"y": null, "z": 3}, "b": [2]}));
        assert_eq!(base, json!({"a": {"x": 1, "z": 3}, "b": [2]}));
    }

    #[test]
    fn the_first_condition_path_that_is_set_decides() {
        let v = json!({"nfd": {"enabled": false}, "other": {"enabled": true}});
        assert!(!enabled(Some("nfd.enabled"), &v));
        assert!(enabled(Some("missing.enabled, other.enabled"), &v));
        assert!(enabled(Some("missing.enabled"), &v));
        assert!(enabled(None, &v));
    }

    fn chart(dir: &Path) {
        std::fs::create_dir_all(dir.join("charts/sub")).unwrap();
        std::fs::write(
            dir.join("Chart.yaml"),
            "apiVersion: v2\nname: top\nversion: 1.0.0\ndependencies:\n  - name: sub\n    alias: helper\n    version: 0.1.0\n    condition: helper.enabled\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("values.yaml"),
            "replicas: 1\nhelper:\n  enabled: true\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("values.schema.json"),
            r#"{"type": "object", "properties": {"replicas": {"type": "integer"}}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("charts/sub/Chart.yaml"),
            "apiVersion: v2\nname: sub\nversion: 0.1.0\n",
        )
        .unwrap();
        std::fs::write(dir.join("charts/sub/values.yaml"), "port: 80\n").unwrap();
        std::fs::write(
            dir.join("charts/sub/values.schema.json"),
            r#"{"type": "object", "properties": {"port": {"type": "integer", "maximum": 65535}}}"#,
        )
        .unwrap();
    }

    #[test]
    fn a_value_the_chart_or_an_enabled_subchart_rejects_is_reported_at_its_pointer() {
        let tmp = tempfile::tempdir().unwrap();
        chart(tmp.path());
        assert_eq!(check(tmp.path(), &json!({})).unwrap(), []);
        let v = check(
            tmp.path(),
            &json!({"replicas": "two", "helper": {"port": 70000}}),
        )
        .unwrap();
        let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["/replicas", "/helper/port"], "{v:?}");
        assert!(v[0].message.contains("\"two\""), "{}", v[0].message);
        // A disabled subchart is not checked, as Helm drops it.
        let v = check(
            tmp.path(),
            &json!({"helper": {"enabled": false, "port": 70000}}),
        )
        .unwrap();
        assert_eq!(v, []);
    }

    #[test]
    fn a_packaged_chart_with_a_packaged_subchart_is_checked_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("top");
        chart(&src);
        // Package the subchart inside the chart, then the chart itself.
        let pack = |dir: &Path, name: &str, to: &Path| {
            let file = std::fs::File::create(to).unwrap();
            let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::fast(),
            ));
            b.append_dir_all(name, dir).unwrap();
            b.into_inner().unwrap().finish().unwrap();
        };
        pack(
            &src.join("charts/sub"),
            "sub",
            &src.join("charts/sub-0.1.0.tgz"),
        );
        std::fs::remove_dir_all(src.join("charts/sub")).unwrap();
        let tgz = tmp.path().join("top-1.0.0.tgz");
        pack(&src, "top", &tgz);
        let v = check(&tgz, &json!({"helper": {"port": 70000}})).unwrap();
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pointer, "/helper/port");
    }
}
