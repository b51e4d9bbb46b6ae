//! The database agent's `DbSnapshot`, checked and decoded into a
//! [`DbSnapshotRow`]. Never stores anything itself, and never trusts the
//! wire: every count and length is capped and the lock forest's shape is
//! checked, so the store keeps only what the API can show without a check.
//!
//! What is left out, always counted in [`Refusals`] (never a panic, never
//! silently):
//! - sessions past [`MAX_SESSIONS`] (added to `sessions_omitted`, so the
//!   API still says how many were not shown), and a second session with
//!   an id already seen;
//! - the part of a query (or a transaction's last query) past
//!   [`MAX_QUERY_BYTES`], cut on a character boundary and marked cut; the
//!   part of any other text field past [`MAX_FIELD_BYTES`];
//! - lock nodes past [`MAX_LOCK_NODES`] and nodes deeper than
//!   [`MAX_LOCK_DEPTH`] (a prefix of a depth-first forest, and the forest
//!   without its deepest levels, are forests still);
//! - the whole lock tree when it is not a depth-first forest: a first
//!   node that is not a root, a depth that jumps by more than one, a node
//!   whose parent is not the nearest shallower node before it (an unknown
//!   parent), a root that names a parent, a session id 0. The sessions are
//!   kept, and the snapshot says why its tree is missing;
//! - variables past [`MAX_VARIABLES`], and any whose name or value is over
//!   [`MAX_VARIABLE_NAME_BYTES`] / [`MAX_FIELD_BYTES`].

use std::collections::{BTreeMap, HashSet};

use sightline_proto::v1 as pb;

use crate::ingest::convert::Refusals;
use crate::model::{
    DbSessionRow, DbSnapshotBody, DbSnapshotRow, DbTransactionRow, LockNodeRow, LockWaitRow,
};

/// Sessions kept per snapshot.
pub const MAX_SESSIONS: usize = 10_000;
/// Longest query text kept (the agent's own cut, `db.query.max`, is 4 KiB
/// by default).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Longest other text (user, host, state, a lock's table, a variable's
/// value, ...).
pub const MAX_FIELD_BYTES: usize = 1024;
/// Lock tree nodes kept per snapshot.
pub const MAX_LOCK_NODES: usize = 10_000;
/// Deepest lock tree node kept (0 is a root). The API nests the tree as
/// JSON, two levels per node; clients' parsers commonly stop at 128.
pub const MAX_LOCK_DEPTH: u32 = 32;
/// Variables kept per snapshot.
pub const MAX_VARIABLES: usize = 1_000;
/// Longest variable name.
pub const MAX_VARIABLE_NAME_BYTES: usize = 128;
/// Longest `reason`, `flavor` and `version`.
pub const MAX_LABEL_BYTES: usize = 64;

/// Converts one snapshot; `at` resolves a zero time to the batch's.
pub fn snapshot_from_wire(
    s: pb::DbSnapshot,
    at: impl Fn(i64) -> i64,
    refused: &mut Refusals,
) -> DbSnapshotRow {
    let mut cuts = Cuts::default();
    let mut seen = HashSet::new();
    let mut sessions = Vec::with_capacity(s.sessions.len().min(MAX_SESSIONS));
    let mut over_cap = 0u64;
    for session in s.sessions {
        if !seen.insert(session.id) {
            refused.add(|| "a database snapshot names one session id twice".into());
            continue;
        }
        if sessions.len() == MAX_SESSIONS {
            over_cap += 1;
            continue;
        }
        sessions.push(session_from_wire(session, &mut cuts));
    }
    refused.add_many(over_cap, || {
        format!("database sessions over {MAX_SESSIONS} per snapshot")
    });
    let (locks, locks_refused) = forest_from_wire(s.locks, &mut cuts, refused);
    let mut variables = BTreeMap::new();
    for (name, value) in s.variables {
        if variables.len() == MAX_VARIABLES {
            refused.add(|| format!("database variables over {MAX_VARIABLES} per snapshot"));
        } else if name.is_empty()
            || name.len() > MAX_VARIABLE_NAME_BYTES
            || value.len() > MAX_FIELD_BYTES
        {
            refused.add(|| {
                format!(
                    "a database variable's name is empty or over {MAX_VARIABLE_NAME_BYTES} bytes, or its value over {MAX_FIELD_BYTES}"
                )
            });
        } else {
            variables.insert(name, value);
        }
    }
    let row = DbSnapshotRow {
        time_ms: at(s.time_ms),
        reason: cuts.label(s.reason),
        flavor: cuts.label(s.flavor),
        version: cuts.label(s.version),
        variables,
        body: DbSnapshotBody {
            sessions,
            sessions_omitted: s
                .sessions_omitted
                .saturating_add(u32::try_from(over_cap).unwrap_or(u32::MAX)),
            locks_read: s.locks_read,
            locks,
            locks_refused,
        },
    };
    cuts.report(refused);
    row
}

/// Texts cut, counted once per snapshot and kind.
#[derive(Default)]
struct Cuts {
    queries: u64,
    fields: u64,
}

impl Cuts {
    fn query(&mut self, text: String, was_cut: &mut bool) -> String {
        if text.len() <= MAX_QUERY_BYTES {
            return text;
        }
        self.queries += 1;
        *was_cut = true;
        cut(text, MAX_QUERY_BYTES)
    }

    fn field(&mut self, text: String) -> String {
        if text.len() <= MAX_FIELD_BYTES {
            return text;
        }
        self.fields += 1;
        cut(text, MAX_FIELD_BYTES)
    }

    fn label(&mut self, text: String) -> String {
        if text.len() <= MAX_LABEL_BYTES {
            return text;
        }
        self.fields += 1;
        cut(text, MAX_LABEL_BYTES)
    }

    fn report(&self, refused: &mut Refusals) {
        refused.add_many(self.queries, || {
            format!("database query texts cut at {MAX_QUERY_BYTES} bytes")
        });
        refused.add_many(self.fields, || {
            format!("database snapshot fields cut at {MAX_FIELD_BYTES} bytes ({MAX_LABEL_BYTES} for reason, flavor, version)")
        });
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn session_from_wire(s: pb::DbSession, cuts: &mut Cuts) -> DbSessionRow {
    let mut query_cut = s.query_cut;
    let query = cuts.query(s.query, &mut query_cut);
    DbSessionRow {
        id: s.id,
        user: cuts.field(s.user),
        host: cuts.field(s.host),
        db: cuts.field(s.db),
        command: cuts.field(s.command),
        state: cuts.field(s.state),
        time_ms: s.time_ms,
        query,
        query_cut,
        trx: s.trx.map(|t| {
            let mut ignored = false;
            DbTransactionRow {
                id: cuts.field(t.id),
                state: cuts.field(t.state),
                age_ms: t.age_ms,
                rows_locked: t.rows_locked,
                rows_modified: t.rows_modified,
                tables_locked: t.tables_locked,
                idle_ms: t.idle_ms,
                last_query: cuts.query(t.last_query, &mut ignored),
            }
        }),
        stage: cuts.field(s.stage),
        progress_pct: if s.progress_pct.is_finite() {
            s.progress_pct.clamp(0.0, 100.0)
        } else {
            0.0
        },
        memory_bytes: s.memory_bytes,
    }
}

/// The lock forest, capped and checked: the nodes kept, or none and why.
fn forest_from_wire(
    nodes: Vec<pb::LockNode>,
    cuts: &mut Cuts,
    refused: &mut Refusals,
) -> (Vec<LockNodeRow>, Option<String>) {
    let claimed = nodes.len() as u64;
    if let Err(reason) = check_forest(&nodes) {
        refused.add_many(claimed, || {
            format!("a database lock tree is malformed: {reason}")
        });
        return (Vec::new(), Some(reason));
    }
    let mut kept = Vec::with_capacity(nodes.len().min(MAX_LOCK_NODES));
    let (mut too_many, mut too_deep) = (0u64, 0u64);
    for node in nodes {
        if node.depth > MAX_LOCK_DEPTH {
            too_deep += 1;
        } else if kept.len() == MAX_LOCK_NODES {
            too_many += 1;
        } else {
            kept.push(LockNodeRow {
                session_id: node.session_id,
                parent_id: node.parent_id,
                depth: node.depth,
                root_blocker: node.root_blocker,
                in_cycle: node.in_cycle,
                gone: node.gone,
                wait: node.wait.map(|w| LockWaitRow {
                    kind: cuts.field(w.kind),
                    mode: cuts.field(w.mode),
                    holder_mode: cuts.field(w.holder_mode),
                    table: cuts.field(w.table),
                    index: cuts.field(w.index),
                    data: cuts.field(w.data),
                    wait_ms: w.wait_ms,
                }),
                repeated_node: node.repeated_node,
            });
        }
    }
    refused.add_many(too_deep, || {
        format!("database lock tree nodes deeper than {MAX_LOCK_DEPTH}")
    });
    refused.add_many(too_many, || {
        format!("database lock tree nodes over {MAX_LOCK_NODES} per snapshot")
    });
    (kept, None)
}

/// Whether `nodes` is a forest in depth-first order; the reason if not.
fn check_forest(nodes: &[pb::LockNode]) -> Result<(), String> {
    // The path from the current root to the previous node: session ids.
    let mut path: Vec<u64> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if node.session_id == 0 {
            return Err(format!("node {i} has session id 0"));
        }
        let depth = usize::try_from(node.depth).unwrap_or(usize::MAX);
        if depth > path.len() {
            return Err(if i == 0 {
                format!("the first node has depth {depth}, not 0 (a forest starts with a root)")
            } else {
                format!(
                    "node {i} (session {}) has depth {depth} after a node of depth {}",
                    node.session_id,
                    path.len() - 1
                )
            });
        }
        path.truncate(depth);
        match path.last() {
            None if node.parent_id != 0 => {
                return Err(format!(
                    "node {i} (session {}) is a root but names parent {}",
                    node.session_id, node.parent_id
                ));
            }
            Some(&parent) if parent != node.parent_id => {
                return Err(format!(
                    "node {i} (session {}) names parent {}, unknown there (the node above it is session {parent})",
                    node.session_id, node.parent_id
                ));
            }
            _ => {}
        }
        path.push(node.session_id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(session_id: u64, parent_id: u64, depth: u32) -> pb::LockNode {
        pb::LockNode {
            session_id,
            parent_id,
            depth,
            root_blocker: depth == 0,
            wait: (depth > 0).then(|| pb::LockWait {
                kind: "RECORD".into(),
                mode: "X".into(),
                holder_mode: "X".into(),
                table: "`shop`.`orders`".into(),
                index: "PRIMARY".into(),
                data: "1".into(),
                wait_ms: 1000 * u64::from(depth),
            }),
            ..pb::LockNode::default()
        }
    }

    fn session(id: u64, query: &str) -> pb::DbSession {
        pb::DbSession {
            id,
            user: "app".into(),
            host: "10.0.0.1:5000".into(),
            command: "Query".into(),
            query: query.into(),
            ..pb::DbSession::default()
        }
    }

    fn snapshot(sessions: Vec<pb::DbSession>, locks: Vec<pb::LockNode>) -> pb::DbSnapshot {
        pb::DbSnapshot {
            time_ms: 0,
            reason: "periodic".into(),
            flavor: "mariadb".into(),
            version: "10.11.6-MariaDB".into(),
            sessions,
            locks_read: !locks.is_empty(),
            locks,
            ..pb::DbSnapshot::default()
        }
    }

    fn convert(s: pb::DbSnapshot) -> (DbSnapshotRow, Refusals) {
        let mut refused = Refusals::default();
        let row = snapshot_from_wire(s, |t| if t == 0 { 777 } else { t }, &mut refused);
        (row, refused)
    }

    /// A holds, B and C wait on A, D waits on C; E holds, F waits on it.
    fn chain() -> Vec<pb::LockNode> {
        vec![
            node(1, 0, 0),
            node(2, 1, 1),
            node(3, 1, 1),
            node(4, 3, 2),
            node(5, 0, 0),
            node(6, 5, 1),
        ]
    }

    #[test]
    fn a_well_formed_forest_is_kept_whole_with_the_batch_time() {
        let (row, refused) = convert(snapshot(vec![session(1, "update t")], chain()));
        assert_eq!(refused, Refusals::default());
        assert_eq!(row.time_ms, 777);
        assert_eq!(row.body.locks.len(), 6);
        assert_eq!(row.body.root_blockers(), 2);
        assert_eq!(row.body.waiting(), 4);
        assert_eq!(row.body.max_wait_ms(), 2000);
        assert_eq!(row.body.locks_refused, None);
        let d = &row.body.locks[3];
        assert_eq!((d.session_id, d.parent_id, d.depth), (4, 3, 2));
        assert_eq!(d.wait.as_ref().map(|w| w.index.as_str()), Some("PRIMARY"));
    }

    #[test]
    fn an_unknown_parent_refuses_the_tree_by_count_and_keeps_the_sessions() {
        let mut locks = chain();
        locks[3].parent_id = 2; // D under C claims B as its parent
        let (row, refused) = convert(snapshot(vec![session(1, "x"), session(2, "y")], locks));
        assert!(row.body.locks.is_empty());
        assert_eq!(row.body.sessions.len(), 2, "the sessions are kept");
        let why = row.body.locks_refused.expect("says why");
        assert!(why.contains("names parent 2, unknown there"), "{why}");
        assert_eq!(refused.count, 6, "every node the tree claimed");
        assert!(refused.reasons[0].contains("lock tree is malformed"));
    }

    #[test]
    fn malformed_forests_are_refused_with_a_reason_never_a_panic() {
        let cases: Vec<(Vec<pb::LockNode>, &str)> = vec![
            (vec![node(2, 1, 1)], "the first node has depth 1"),
            (
                vec![node(1, 0, 0), node(2, 1, 2)],
                "depth 2 after a node of depth 0",
            ),
            (vec![node(1, 9, 0)], "is a root but names parent 9"),
            (vec![node(0, 0, 0)], "session id 0"),
            (vec![node(1, 0, 0), node(2, 1, u32::MAX)], "depth"),
        ];
        for (locks, want) in cases {
            let (row, refused) = convert(snapshot(Vec::new(), locks));
            let why = row.body.locks_refused.unwrap_or_default();
            assert!(why.contains(want), "{why} should say {want}");
            assert!(refused.count > 0);
        }
    }

    #[test]
    fn nodes_deeper_than_the_cap_are_left_out_and_counted() {
        let deep: Vec<pb::LockNode> = (0..=MAX_LOCK_DEPTH + 2)
            .map(|d| node(u64::from(d) + 1, u64::from(d), d))
            .collect();
        let (row, refused) = convert(snapshot(Vec::new(), deep));
        assert_eq!(row.body.locks.len(), MAX_LOCK_DEPTH as usize + 1);
        assert_eq!(refused.count, 2);
        assert!(refused.reasons[0].contains("deeper than 32"));
    }

    #[test]
    fn sessions_over_the_cap_and_duplicate_ids_are_counted_and_omitted() {
        let mut sessions: Vec<pb::DbSession> = (1..=MAX_SESSIONS as u64 + 5)
            .map(|id| session(id, "select 1"))
            .collect();
        sessions.push(session(1, "again"));
        let mut wire = snapshot(sessions, Vec::new());
        wire.sessions_omitted = 3;
        let (row, refused) = convert(wire);
        assert_eq!(row.body.sessions.len(), MAX_SESSIONS);
        assert_eq!(row.body.sessions_omitted, 8, "the agent's 3 and our 5");
        assert_eq!(refused.count, 6);
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary_and_marked() {
        let huge = "é".repeat(MAX_QUERY_BYTES); // two bytes each
        let mut s = session(1, &huge);
        s.user = "u".repeat(MAX_FIELD_BYTES + 1);
        s.progress_pct = f64::NAN;
        let (row, refused) = convert(snapshot(vec![s], Vec::new()));
        let kept = &row.body.sessions[0];
        assert!(kept.query_cut);
        assert_eq!(kept.query.len(), MAX_QUERY_BYTES);
        assert_eq!(kept.user.len(), MAX_FIELD_BYTES);
        assert_eq!(kept.progress_pct, 0.0);
        assert_eq!(refused.count, 2);
    }

    #[test]
    fn variables_over_their_caps_are_refused() {
        let mut wire = snapshot(Vec::new(), Vec::new());
        wire.variables = [
            ("max_connections".to_string(), "151".to_string()),
            (String::new(), "x".to_string()),
            ("v".to_string(), "x".repeat(MAX_FIELD_BYTES + 1)),
        ]
        .into();
        let (row, refused) = convert(wire);
        assert_eq!(
            row.variables.into_iter().collect::<Vec<_>>(),
            [("max_connections".to_string(), "151".to_string())]
        );
        assert_eq!(refused.count, 2);
    }

    /// Depths of a depth-first forest: the first 0, each at most one
    /// deeper than the one before.
    fn forest_depths() -> impl proptest::strategy::Strategy<Value = Vec<u32>> {
        proptest::collection::vec(0u32..6, 0..40).prop_map(|steps| {
            let mut depths = Vec::with_capacity(steps.len());
            let mut last: Option<u32> = None;
            for step in steps {
                let depth = match last {
                    None => 0,
                    Some(d) => step.min(d + 1),
                };
                depths.push(depth);
                last = Some(depth);
            }
            depths
        })
    }

    use proptest::prelude::*;

    proptest! {
        /// Every well-formed forest (each node's parent the nearest
        /// shallower node before it) is kept whole, nothing refused.
        #[test]
        fn a_well_formed_forest_is_never_refused(depths in forest_depths()) {
            let mut path: Vec<u64> = Vec::new();
            let mut locks = Vec::new();
            for (i, &depth) in depths.iter().enumerate() {
                path.truncate(depth as usize);
                let id = i as u64 + 1;
                locks.push(node(id, path.last().copied().unwrap_or(0), depth));
                path.push(id);
            }
            let (row, refused) = convert(snapshot(Vec::new(), locks));
            prop_assert_eq!(refused.count, 0);
            prop_assert_eq!(row.body.locks.len(), depths.len());
            prop_assert!(row.body.locks_refused.is_none());
        }

        /// Any list of nodes at all: no panic, and either the tree is kept
        /// whole or it is refused whole, each node counted.
        #[test]
        fn any_node_list_is_kept_or_refused_whole_never_a_panic(
            raw in proptest::collection::vec((0u64..6, 0u64..6, 0u32..5), 0..30),
        ) {
            let n = raw.len();
            let locks = raw.into_iter().map(|(id, parent, depth)| node(id, parent, depth)).collect();
            let (row, refused) = convert(snapshot(Vec::new(), locks));
            if row.body.locks_refused.is_some() {
                prop_assert!(row.body.locks.is_empty());
                prop_assert_eq!(refused.count, n as u64);
            } else {
                prop_assert_eq!(row.body.locks.len(), n);
                prop_assert_eq!(refused.count, 0);
            }
        }
    }
}
