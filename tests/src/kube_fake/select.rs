//! Label and field selectors as the API server parses and applies them:
//! equality (`=`, `==`, `!=`) for both, and for labels also existence
//! (`key`, `!key`) and sets (`in (a,b)`, `notin (a,b)`). Field selectors
//! accept only the fields the real server indexes for each kind (400
//! otherwise), so a client cannot rely on one the real server refuses.
//!
//! Never panics on a malformed selector: it is outside input, answered 400.

use serde_json::Value;

use super::store::{ApiError, EVENTS_CORE, EVENTS_V1, Index, KINDS, storage_of};

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed selector (every requirement must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// Splits on commas outside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn bad(what: &str, text: &str) -> ApiError {
    ApiError::new(
        400,
        "BadRequest",
        format!("unable to parse requirement: invalid {what} selector: {text:?}"),
    )
}

fn set_values(rest: &str, text: &str) -> Result<Vec<String>, ApiError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad("label", text))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl Selector {
    /// Parses a `labelSelector`.
    pub fn labels(text: &str) -> Result<Selector, ApiError> {
        let mut requirements = Vec::new();
        for part in split_top(text) {
            let requirement = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set_values(rest, text)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(k.trim().into(), set_values(rest, text)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if part.contains(['(', ')', ' ']) {
                return Err(bad("label", text));
            } else {
                Requirement::Exists(part.into())
            };
            requirements.push(requirement);
        }
        Ok(Selector { requirements })
    }

    /// Parses a `fieldSelector` for `kind`, refusing fields the real
    /// server does not index.
    pub fn fields(text: &str, kind: usize) -> Result<Selector, ApiError> {
        let mut requirements = Vec::new();
        for part in split_top(text) {
            let (field, value, negated) = if let Some((k, v)) = part.split_once("!=") {
                (k.trim(), v.trim(), true)
            } else if let Some((k, v)) = part.split_once("==") {
                (k.trim(), v.trim(), false)
            } else if let Some((k, v)) = part.split_once('=') {
                (k.trim(), v.trim(), false)
            } else {
                return Err(bad("field", text));
            };
            if !field_supported(kind, field) {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    format!(
                        "field label not supported: {field} for {}",
                        KINDS[kind].kind
                    ),
                ));
            }
            // events.k8s.io names the fields of the one event storage
            // differently; the index holds core/v1's names.
            let field = if kind == EVENTS_V1 {
                field
                    .replacen("regarding.", "involvedObject.", 1)
                    .replace("reportingController", "reportingComponent")
            } else {
                field.to_string()
            };
            requirements.push(if negated {
                Requirement::NotEquals(field, value.into())
            } else {
                Requirement::Equals(field, value.into())
            });
        }
        Ok(Selector { requirements })
    }

    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's labels match.
    pub fn matches_labels(&self, index: &Index) -> bool {
        let label = |k: &str| {
            index
                .labels
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
        })
    }

    /// Whether an object's fields match (a missing field is `""`).
    pub fn matches_fields(&self, index: &Index) -> bool {
        let field = |k: &str| {
            index
                .fields
                .iter()
                .find(|(key, _)| *key == k)
                .map_or("", |(_, v)| v.as_str())
        };
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => field(k) == v,
            Requirement::NotEquals(k, v) => field(k) != v,
            _ => true,
        })
    }
}

/// A field's value as the server's field set renders it.
pub fn field_value(object: &Value, path: &str) -> String {
    let mut at = object;
    for part in path.split('.') {
        at = &at[part];
    }
    match at {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// The field selectors the real API server accepts per kind.
fn field_supported(kind: usize, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace") || selectable(kind).contains(&field)
}

/// The fields kept in a stored object's [`Index`] (core/v1 names for
/// events).
pub fn indexed_fields(storage: usize) -> Vec<&'static str> {
    let mut fields = vec!["metadata.name", "metadata.namespace"];
    fields.extend_from_slice(selectable(storage_of(storage)));
    fields
}

/// Each kind's selectable fields beyond name and namespace.
fn selectable(kind: usize) -> &'static [&'static str] {
    match (kind, KINDS[kind].plural) {
        (_, "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        (_, "nodes") => &["spec.unschedulable"],
        (_, "namespaces") => &["status.phase"],
        (_, "replicasets") => &["status.replicas"],
        (_, "jobs") => &["status.successful"],
        (EVENTS_CORE, _) => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        (EVENTS_V1, _) => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_fake::store::PODS;
    use serde_json::json;

    #[test]
    fn label_selectors_follow_the_api_grammar() {
        let pod = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let pod = Index::of(PODS, &pod);
        let ok = |s: &str| Selector::labels(s).expect(s).matches_labels(&pod);
        assert!(ok("app=web"));
        assert!(ok("app==web,tier"));
        assert!(!ok("app!=web"));
        assert!(ok("tier in (front,back),!canary"));
        assert!(!ok("tier notin (front)"));
        assert!(ok(""));
    }

    #[test]
    fn field_selectors_refuse_what_the_server_does_not_index() {
        let pod =
            json!({"metadata": {"name": "a", "namespace": "n"}, "spec": {"nodeName": "node-1"}});
        let s =
            Selector::fields("spec.nodeName=node-1,metadata.namespace!=x", PODS).expect("parses");
        assert!(s.matches_fields(&Index::of(PODS, &pod)));
        let other =
            json!({"metadata": {"name": "b", "namespace": "n"}, "spec": {"nodeName": "node-2"}});
        assert!(!s.matches_fields(&Index::of(PODS, &other)));
        let err = Selector::fields("spec.containers=x", PODS).expect_err("refused");
        assert_eq!(err.code, 400);
    }
}
