//! Tests of the lock tree: the shapes a DBA meets (a chain, a fan, a
//! waiter on two blockers, a deadlock in the making, a gone session) and a
//! property test over random wait graphs.

use super::*;
use proptest::prelude::*;

fn edge(waiter: u64, blocker: u64, wait_ms: u64) -> WaitEdge {
    WaitEdge {
        waiter,
        blocker,
        wait: LockWait {
            kind: "RECORD".into(),
            mode: "X".into(),
            holder_mode: "X".into(),
            table: "`shop`.`orders`".into(),
            index: "PRIMARY".into(),
            data: "1".into(),
            wait_ms,
        },
    }
}

/// (session, parent, depth, root_blocker, in_cycle, gone, repeated) per node.
type Shape = (u64, u64, u32, bool, bool, bool, bool);

fn shape(nodes: &[LockNode]) -> Vec<Shape> {
    nodes
        .iter()
        .map(|n| {
            (
                n.session_id,
                n.parent_id,
                n.depth,
                n.root_blocker,
                n.in_cycle,
                n.gone,
                n.repeated_node,
            )
        })
        .collect()
}

#[test]
fn a_chain_and_a_fan_under_one_root_blocker() {
    // A=1 holds; B=2 and C=3 wait on A (C longer); D=4 waits on C.
    let edges = [edge(2, 1, 1000), edge(3, 1, 5000), edge(4, 3, 200)];
    let tree = build(&edges, |_| true);
    assert_eq!(
        shape(&tree),
        [
            (1, 0, 0, true, false, false, false),
            (3, 1, 1, false, false, false, false),
            (4, 3, 2, false, false, false, false),
            (2, 1, 1, false, false, false, false),
        ]
    );
    assert!(tree[0].wait.is_none());
    assert_eq!(tree[1].wait.as_ref().map(|w| w.wait_ms), Some(5000));
}

#[test]
fn a_waiter_on_two_blockers_appears_under_each_and_is_expanded_once() {
    // 3 waits on 1 and on 2; 4 waits on 3.
    let edges = [edge(3, 1, 10), edge(3, 2, 10), edge(4, 3, 10)];
    let tree = build(&edges, |_| true);
    assert_eq!(
        shape(&tree),
        [
            (1, 0, 0, true, false, false, false),
            (3, 1, 1, false, false, false, false),
            (4, 3, 2, false, false, false, false),
            (2, 0, 0, true, false, false, false),
            (3, 2, 1, false, false, false, true),
        ]
    );
}

#[test]
fn a_cycle_is_marked_and_terminates() {
    // 1 -> 2 -> 3 -> 1 (each waits on the next), and 4 waits on 2.
    let edges = [
        edge(1, 2, 10),
        edge(2, 3, 10),
        edge(3, 1, 10),
        edge(4, 2, 10),
    ];
    let tree = build(&edges, |_| true);
    assert_eq!(
        shape(&tree),
        [
            (1, 0, 0, false, false, false, false),
            (3, 1, 1, false, false, false, false),
            (2, 3, 2, false, false, false, false),
            (1, 2, 3, false, true, false, true),
            (4, 2, 3, false, false, false, false),
        ]
    );
}

#[test]
fn a_cycle_behind_a_root_is_reached_from_the_root() {
    // 1 holds; 2 waits on 1 and on 3; 3 waits on 2.
    let edges = [edge(2, 1, 10), edge(2, 3, 10), edge(3, 2, 10)];
    let tree = build(&edges, |_| true);
    assert_eq!(
        shape(&tree),
        [
            (1, 0, 0, true, false, false, false),
            (2, 1, 1, false, false, false, false),
            (3, 2, 2, false, false, false, false),
            (2, 3, 3, false, true, false, true),
        ]
    );
}

#[test]
fn gone_sessions_duplicates_and_self_waits_are_tolerated() {
    let edges = [edge(2, 1, 10), edge(2, 1, 99), edge(5, 5, 1)];
    let tree = build(&edges, |s| s != 1);
    assert_eq!(
        shape(&tree),
        [
            (1, 0, 0, true, false, true, false),
            (2, 1, 1, false, false, false, false),
        ]
    );
    assert_eq!(tree[1].wait.as_ref().map(|w| w.wait_ms), Some(10));
    assert!(build(&[], |_| true).is_empty());
}

#[test]
fn a_long_chain_does_not_overflow_the_stack() {
    let edges: Vec<WaitEdge> = (1..100_000u64).map(|i| edge(i + 1, i, 1)).collect();
    let tree = build(&edges, |_| true);
    assert_eq!(tree.len(), 100_000);
    assert_eq!(tree.last().map(|n| n.depth), Some(99_999));
}

#[test]
fn the_tree_renders_for_people() {
    use crate::snapshot::{Session, Transaction};
    let edges = [edge(2, 1, 12_000), edge(3, 2, 500), edge(3, 1, 500)];
    let tree = build(&edges, |s| s != 3);
    let sessions = [
        Session {
            id: 1,
            user: "app".into(),
            host: "10.0.0.5:4000".into(),
            command: "Sleep".into(),
            trx: Some(Transaction {
                idle_ms: 42_000,
                last_query: "UPDATE orders SET v = 1\nWHERE id = 1".into(),
                ..Transaction::default()
            }),
            ..Session::default()
        },
        Session {
            id: 2,
            user: "app".into(),
            host: "10.0.0.6:4000".into(),
            query: "UPDATE orders SET v = 2 WHERE id = 1".into(),
            ..Session::default()
        },
    ];
    assert_eq!(
        render(&tree, &sessions, 4096),
        "1 root blocker app@10.0.0.5:4000: idle in transaction for 42.0 s, last: UPDATE orders SET v = 1 WHERE id = 1\n\
         \x20\x202 waits 12.0 s for RECORD X `shop`.`orders` PRIMARY (1) held X app@10.0.0.6:4000: UPDATE orders SET v = 2 WHERE id = 1\n\
         \x20\x20\x20\x203 waits 0.5 s for RECORD X `shop`.`orders` PRIMARY (1) held X [gone]\n\
         \x20\x203 waits 0.5 s for RECORD X `shop`.`orders` PRIMARY (1) held X [also above] [gone]\n"
    );
    let short = render(&tree, &sessions, 200);
    assert!(short.ends_with("... 3 more"), "{short}");
    assert!(short.len() <= 220);
}

proptest! {
    #[test]
    fn every_edge_appears_every_walk_ends_and_roots_do_not_wait(
        pairs in proptest::collection::vec((1u64..10, 1u64..10, 0u64..5), 0..40),
        gone in proptest::collection::btree_set(1u64..10, 0..4),
    ) {
        let edges: Vec<WaitEdge> = pairs.iter().map(|&(w, b, ms)| edge(w, b, ms)).collect();
        let tree = build(&edges, |s| !gone.contains(&s));
        let real: BTreeSet<(u64, u64)> = pairs
            .iter()
            .filter(|(w, b, _)| w != b)
            .map(|&(w, b, _)| (w, b))
            .collect();
        // Every edge once, as a node under its blocker; nothing else.
        let shown: Vec<(u64, u64)> = tree
            .iter()
            .filter(|n| n.depth > 0)
            .map(|n| (n.session_id, n.parent_id))
            .collect();
        let shown_set: BTreeSet<(u64, u64)> = shown.iter().copied().collect();
        prop_assert_eq!(shown.len(), shown_set.len());
        prop_assert_eq!(&shown_set, &real);
        // Finite: one node per edge plus one per tree.
        let sessions: BTreeSet<u64> = real.iter().flat_map(|&(w, b)| [w, b]).collect();
        prop_assert!(tree.len() <= real.len() + sessions.len());
        // Each session once without `repeated_node`.
        let firsts: Vec<u64> = tree.iter().filter(|n| !n.repeated_node).map(|n| n.session_id).collect();
        prop_assert_eq!(firsts.len(), sessions.len());
        for (i, node) in tree.iter().enumerate() {
            if node.root_blocker {
                prop_assert_eq!(node.depth, 0);
                prop_assert!(!real.iter().any(|&(w, _)| w == node.session_id));
            }
            if node.depth > 0 {
                // Depth first: the parent is the nearest earlier node one level up.
                let parent = tree[..i].iter().rev().find(|p| p.depth == node.depth - 1);
                prop_assert_eq!(parent.map(|p| p.session_id), Some(node.parent_id));
                prop_assert!(node.wait.is_some());
            }
            prop_assert_eq!(node.gone, gone.contains(&node.session_id));
            if node.in_cycle {
                prop_assert!(node.repeated_node);
            }
        }
    }
}
