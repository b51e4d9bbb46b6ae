//! The database agent's wire edge: its [`DbSnapshot`] becomes the
//! `DbSnapshot` message of `db.proto` here, and nowhere else in the crate.
//! The only module of sightline-db that sees prost types.

use agent_core::transport::wire::unix_ms;
use agent_core::{Payload, WirePayload};
use sightline_proto::v1 as pb;

use crate::snapshot::{DbSnapshot, LockNode, LockWait, Session, Transaction};

/// A snapshot as a payload agent-core can carry; its strings move into the
/// message, not copied.
pub fn snapshot_payload(snapshot: DbSnapshot) -> Payload {
    let time = snapshot.time;
    Payload::Encoded(WirePayload::new(
        time,
        pb::Payload {
            kind: Some(pb::payload::Kind::Db(snapshot_to_wire(snapshot))),
        },
    ))
}

/// The message itself (for tests that look at what is sent).
pub fn snapshot_to_wire(s: DbSnapshot) -> pb::DbSnapshot {
    pb::DbSnapshot {
        time_ms: unix_ms(s.time),
        reason: s.reason.as_str().to_string(),
        flavor: s.flavor,
        version: s.version,
        sessions: s.sessions.into_iter().map(session_to_wire).collect(),
        sessions_omitted: s.sessions_omitted,
        locks_read: s.locks_read,
        locks: s.locks.into_iter().map(node_to_wire).collect(),
        variables: s.variables.into_iter().collect(),
    }
}

fn session_to_wire(s: Session) -> pb::DbSession {
    pb::DbSession {
        id: s.id,
        user: s.user,
        host: s.host,
        db: s.db,
        command: s.command,
        state: s.state,
        time_ms: s.time_ms,
        query: s.query,
        query_cut: s.query_cut,
        trx: s.trx.map(trx_to_wire),
        stage: s.stage,
        progress_pct: s.progress_pct,
        memory_bytes: s.memory_bytes,
    }
}

fn trx_to_wire(t: Transaction) -> pb::DbTransaction {
    pb::DbTransaction {
        id: t.id,
        state: t.state,
        age_ms: t.age_ms,
        rows_locked: t.rows_locked,
        rows_modified: t.rows_modified,
        tables_locked: t.tables_locked,
        idle_ms: t.idle_ms,
        last_query: t.last_query,
    }
}

fn node_to_wire(n: LockNode) -> pb::LockNode {
    pb::LockNode {
        session_id: n.session_id,
        parent_id: n.parent_id,
        depth: n.depth,
        root_blocker: n.root_blocker,
        in_cycle: n.in_cycle,
        gone: n.gone,
        wait: n.wait.map(wait_to_wire),
        repeated_node: n.repeated_node,
    }
}

fn wait_to_wire(w: LockWait) -> pb::LockWait {
    pb::LockWait {
        kind: w.kind,
        mode: w.mode,
        holder_mode: w.holder_mode,
        table: w.table,
        index: w.index,
        data: w.data,
        wait_ms: w.wait_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotReason;
    use agent_core::health::Health;
    use agent_core::transport::wire::{decode_batch, encode_batch, encode_payload};
    use std::collections::BTreeMap;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_snapshot_reaches_the_wire_with_its_tree() {
        let time = UNIX_EPOCH + Duration::from_secs(2);
        let snapshot = DbSnapshot {
            time,
            reason: SnapshotReason::LockWait,
            flavor: "mariadb".into(),
            version: "10.11.6-MariaDB".into(),
            sessions: vec![Session {
                id: 11,
                query: "UPDATE t SET v = #".into(),
                trx: Some(Transaction {
                    id: "99".into(),
                    rows_locked: 1,
                    ..Transaction::default()
                }),
                ..Session::default()
            }],
            sessions_omitted: 3,
            locks_read: true,
            locks: vec![
                LockNode {
                    session_id: 11,
                    root_blocker: true,
                    ..LockNode::default()
                },
                LockNode {
                    session_id: 12,
                    parent_id: 11,
                    depth: 1,
                    gone: true,
                    wait: Some(LockWait {
                        kind: "RECORD".into(),
                        mode: "X".into(),
                        wait_ms: 12000,
                        ..LockWait::default()
                    }),
                    ..LockNode::default()
                },
            ],
            variables: BTreeMap::from([("max_connections".to_string(), "151".to_string())]),
        };
        let parts = encode_payload(&snapshot_payload(snapshot), 1 << 20).expect("fits");
        let batch =
            decode_batch(&encode_batch(1, time, &Health::default(), &parts)).expect("decodes");
        let Some(pb::payload::Kind::Db(s)) = batch.payloads[0].kind.clone() else {
            panic!("wrong payload");
        };
        assert_eq!(s.time_ms, 2000);
        assert_eq!(s.reason, "lock_wait");
        assert_eq!(s.sessions[0].trx.as_ref().map(|t| t.rows_locked), Some(1));
        assert_eq!(s.sessions_omitted, 3);
        assert!(s.locks[0].root_blocker);
        assert!(s.locks[1].gone);
        assert_eq!(s.locks[1].wait.as_ref().map(|w| w.wait_ms), Some(12000));
        assert_eq!(s.variables["max_connections"], "151");
    }
}
