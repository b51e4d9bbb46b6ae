//! The lock tree: from "waiter waits on blocker" edges to a forest of
//! [`LockNode`]s in depth-first order. A pure function: no SQL, no clock.
//!
//! The forest: each root blocker (a session others wait on that waits on
//! nobody: what a DBA kills) at depth 0, then each session waiting on it,
//! each followed by those waiting on it. Roots are ordered by id, children
//! by longest wait first, then id.
//!
//! What it tolerates, and how it shows it:
//! - a waiter on several blockers appears under each; every appearance but
//!   the first has `repeated_node` and is not expanded again;
//! - a cycle (a deadlock in the making): the wait that closes it appears
//!   with `in_cycle` (and `repeated_node`) and is not followed; a cycle no
//!   root leads to is entered at its lowest id, shown at depth 0 without
//!   `root_blocker`;
//! - a session named by an edge but absent from the process list: `gone`.
//!
//! Invariants (checked by the property test): every edge appears once as a
//! node under its blocker; the output is finite; a `root_blocker` waits on
//! nobody.

use std::collections::{BTreeMap, BTreeSet};

use crate::snapshot::{LockNode, LockWait, Session};

/// One wait: `waiter` waits on `blocker` for `wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitEdge {
    /// The waiting session (connection id).
    pub waiter: u64,
    /// The session holding what it waits for.
    pub blocker: u64,
    /// The lock.
    pub wait: LockWait,
}

/// Builds the forest from `edges`; `present` says whether a session is in
/// the process list. Duplicate (waiter, blocker) pairs keep the first edge;
/// a session waiting on itself is ignored.
pub fn build(edges: &[WaitEdge], present: impl Fn(u64) -> bool) -> Vec<LockNode> {
    // blocker -> its waiters; waiter -> its blockers.
    let mut waiters: BTreeMap<u64, Vec<&WaitEdge>> = BTreeMap::new();
    let mut waits_on: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut sessions: BTreeSet<u64> = BTreeSet::new();
    for edge in edges {
        if edge.waiter == edge.blocker {
            continue;
        }
        let blockers = waits_on.entry(edge.waiter).or_default();
        if !blockers.insert(edge.blocker) {
            continue;
        }
        waiters.entry(edge.blocker).or_default().push(edge);
        sessions.insert(edge.waiter);
        sessions.insert(edge.blocker);
    }
    for list in waiters.values_mut() {
        list.sort_by(|a, b| {
            b.wait
                .wait_ms
                .cmp(&a.wait.wait_ms)
                .then(a.waiter.cmp(&b.waiter))
        });
    }
    let mut out = Vec::new();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let roots: Vec<u64> = sessions
        .iter()
        .copied()
        .filter(|s| !waits_on.contains_key(s))
        .collect();
    for root in roots {
        walk_from(root, true, &waiters, &present, &mut seen, &mut out);
    }
    // What no root reaches lies on or behind a cycle: enter at the lowest id.
    while let Some(start) = sessions.iter().copied().find(|s| !seen.contains(s)) {
        walk_from(start, false, &waiters, &present, &mut seen, &mut out);
    }
    out
}

/// Emits `root` at depth 0 and everything waiting on it, depth first,
/// without recursion (a long chain cannot overflow the stack).
fn walk_from(
    root: u64,
    root_blocker: bool,
    waiters: &BTreeMap<u64, Vec<&WaitEdge>>,
    present: &impl Fn(u64) -> bool,
    seen: &mut BTreeSet<u64>,
    out: &mut Vec<LockNode>,
) {
    seen.insert(root);
    out.push(LockNode {
        session_id: root,
        parent_id: 0,
        depth: 0,
        root_blocker,
        in_cycle: false,
        gone: !present(root),
        wait: None,
        repeated_node: false,
    });
    // The path from the root: (session, index of its next waiter).
    let mut path: Vec<(u64, usize)> = vec![(root, 0)];
    while let Some(&mut (node, ref mut next)) = path.last_mut() {
        let list = waiters.get(&node).map_or(&[][..], Vec::as_slice);
        let Some(edge) = list.get(*next) else {
            path.pop();
            continue;
        };
        *next += 1;
        let child = edge.waiter;
        let on_path = path.iter().any(|(s, _)| *s == child);
        let repeated = seen.contains(&child);
        out.push(LockNode {
            session_id: child,
            parent_id: node,
            depth: path.len() as u32,
            root_blocker: false,
            in_cycle: on_path,
            gone: !present(child),
            wait: Some(edge.wait.clone()),
            repeated_node: repeated,
        });
        if !repeated {
            seen.insert(child);
            path.push((child, 0));
        }
    }
}

/// The tree as text for people (an event's `tree` attribute, a log line):
/// one line per node, indented by depth, at most `max_bytes` (cut at a
/// line, with a count of the lines left out). A root shows what it is
/// doing; a waiter how it waits and on what.
pub fn render(tree: &[LockNode], sessions: &[Session], max_bytes: usize) -> String {
    let mut out = String::new();
    for (i, node) in tree.iter().enumerate() {
        let session = sessions.iter().find(|s| s.id == node.session_id);
        let mut line = "  ".repeat(node.depth as usize);
        line.push_str(&node.session_id.to_string());
        if node.root_blocker {
            line.push_str(" root blocker");
        }
        if let Some(w) = &node.wait {
            line.push_str(&format!(
                " waits {:.1} s for {}{} {}",
                w.wait_ms as f64 / 1000.0,
                w.kind,
                if w.mode.is_empty() {
                    String::new()
                } else {
                    format!(" {}", w.mode)
                },
                w.table
            ));
            if !w.index.is_empty() {
                line.push_str(&format!(" {}", w.index));
            }
            if !w.data.is_empty() {
                line.push_str(&format!(" ({})", w.data));
            }
            if !w.holder_mode.is_empty() {
                line.push_str(&format!(" held {}", w.holder_mode));
            }
        }
        if node.in_cycle {
            line.push_str(" [closes a cycle]");
        } else if node.repeated_node {
            line.push_str(" [also above]");
        }
        if node.gone {
            line.push_str(" [gone]");
        } else if let Some(s) = session
            && !node.repeated_node
        {
            line.push_str(&format!(" {}@{}", s.user, s.host));
            if !s.query.is_empty() {
                line.push_str(": ");
                line.push_str(crate::mask::cut(&s.query.replace('\n', " "), 120).0);
            } else if let Some(t) = &s.trx {
                line.push_str(&format!(
                    ": idle in transaction for {:.1} s",
                    t.idle_ms as f64 / 1000.0
                ));
                if !t.last_query.is_empty() {
                    line.push_str(", last: ");
                    line.push_str(crate::mask::cut(&t.last_query.replace('\n', " "), 120).0);
                }
            }
        }
        if out.len() + line.len() + 1 > max_bytes {
            out.push_str(&format!("... {} more", tree.len() - i));
            break;
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
