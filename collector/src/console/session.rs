//! The console's sign-in sessions: a random id in an HttpOnly cookie maps to
//! one project, held in memory only (a restart signs everyone out).
//!
//! Invariants: at most [`PER_PROJECT`] sessions per project (its least
//! recently used goes first, so one project signing in over and over signs
//! out only its own), and at most [`MAX_SESSIONS`] in all (the least
//! recently used of the project holding the most goes first); a session dies after [`IDLE_LIMIT`] unused or
//! [`ABSOLUTE_LIMIT`] after sign-in, whichever comes first; ids are kept
//! only as SHA-256 hashes, compared by map lookup, and never logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::hash_secret;
use crate::model::Project;

/// The cookie's name.
pub const COOKIE: &str = "sightline_session";
/// Sessions held at once.
pub const MAX_SESSIONS: usize = 10_000;
/// Sessions held at once for one project.
pub const PER_PROJECT: usize = 1_000;
/// A session unused this long is gone.
pub const IDLE_LIMIT: Duration = Duration::from_secs(8 * 3600);
/// No session lives longer than this after sign-in.
pub const ABSOLUTE_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone)]
struct Session {
    project: Project,
    created: Instant,
    last_used: Instant,
}

impl Session {
    fn alive(&self, now: Instant) -> bool {
        now.duration_since(self.created) < ABSOLUTE_LIMIT
            && now.duration_since(self.last_used) < IDLE_LIMIT
    }
}

/// The live sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<Vec<u8>, Session>>,
}

impl Sessions {
    /// Opens a session for `project`; returns its id (for the cookie).
    pub fn open(&self, project: Project) -> Result<String, getrandom::Error> {
        self.open_at(project, Instant::now())
    }

    fn open_at(&self, project: Project, now: Instant) -> Result<String, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut map = self.lock();
        map.retain(|_, s| s.alive(now));
        let mine = map.values().filter(|s| s.project.id == project.id).count();
        if mine >= PER_PROJECT {
            evict_least_recent(&mut map, project.id);
        } else if map.len() >= MAX_SESSIONS {
            let mut counts: HashMap<i64, usize> = HashMap::new();
            for s in map.values() {
                *counts.entry(s.project.id).or_default() += 1;
            }
            if let Some((&largest, _)) = counts.iter().max_by_key(|(_, n)| **n) {
                evict_least_recent(&mut map, largest);
            }
        }
        map.insert(
            hash_secret(&id),
            Session {
                project,
                created: now,
                last_used: now,
            },
        );
        Ok(id)
    }

    /// The project of session `id`, if it is alive; marks it used.
    pub fn project(&self, id: &str) -> Option<Project> {
        self.project_at(id, Instant::now())
    }

    fn project_at(&self, id: &str, now: Instant) -> Option<Project> {
        let hash = hash_secret(id);
        let mut map = self.lock();
        let session = map.get_mut(&hash)?;
        if !session.alive(now) {
            map.remove(&hash);
            return None;
        }
        session.last_used = now;
        Some(session.project.clone())
    }

    /// Whether session `id` is alive, without counting this as a use (a
    /// long-lived event stream checks it; only requests keep a session).
    pub fn is_alive(&self, id: &str) -> bool {
        self.lock()
            .get(&hash_secret(id))
            .is_some_and(|s| s.alive(Instant::now()))
    }

    /// Ends session `id` (sign-out). Unknown ids are ignored.
    pub fn close(&self, id: &str) {
        self.lock().remove(&hash_secret(id));
    }

    /// How many sessions are held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Session>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.by_hash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes the least recently used session of project `project_id`.
fn evict_least_recent(map: &mut HashMap<Vec<u8>, Session>, project_id: i64) {
    let oldest = map
        .iter()
        .filter(|(_, s)| s.project.id == project_id)
        .min_by_key(|(_, s)| s.last_used)
        .map(|(k, _)| k.clone());
    if let Some(k) = oldest {
        map.remove(&k);
    }
}

/// The session id in a `Cookie` header, if any.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(id: i64) -> Project {
        Project {
            id,
            name: format!("p{id}"),
        }
    }

    #[test]
    fn a_session_names_its_project_until_closed() {
        let sessions = Sessions::default();
        let a = sessions.open(project(1)).expect("randomness");
        let b = sessions.open(project(2)).expect("randomness");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(sessions.project(&a).map(|p| p.id), Some(1));
        assert_eq!(sessions.project(&b).map(|p| p.id), Some(2));
        assert_eq!(sessions.project("nope"), None);
        assert!(sessions.is_alive(&a));
        sessions.close(&a);
        assert!(!sessions.is_alive(&a));
        assert_eq!(sessions.project(&a), None);
        assert_eq!(sessions.project(&b).map(|p| p.id), Some(2));
    }

    #[test]
    fn sessions_expire_when_idle_and_at_their_absolute_limit() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let id = sessions.open_at(project(1), start).expect("randomness");
        let nearly_idle = start + IDLE_LIMIT - Duration::from_secs(1);
        assert!(sessions.project_at(&id, nearly_idle).is_some());
        // Used just now: still alive one idle period after sign-in.
        assert!(sessions.project_at(&id, start + IDLE_LIMIT).is_some());
        let idle_again = nearly_idle + IDLE_LIMIT + Duration::from_secs(1);
        assert!(sessions.project_at(&id, idle_again).is_none(), "idle");

        let id = sessions.open_at(project(1), start).expect("randomness");
        let mut t = start;
        while t < start + ABSOLUTE_LIMIT - IDLE_LIMIT {
            t += IDLE_LIMIT / 2;
            assert!(sessions.project_at(&id, t).is_some());
        }
        assert!(
            sessions.project_at(&id, start + ABSOLUTE_LIMIT).is_none(),
            "kept busy, it still ends at the absolute limit"
        );
    }

    #[test]
    fn the_number_of_sessions_is_bounded_and_the_least_recent_goes() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let first = sessions.open_at(project(1), start).expect("randomness");
        let second = sessions
            .open_at(project(1), start + Duration::from_millis(1))
            .expect("randomness");
        // The first is used again, so the second is the least recent.
        let later = start + Duration::from_millis(2);
        assert!(sessions.project_at(&first, later).is_some());
        // Another project's session, older than all of them.
        let other = sessions.open_at(project(2), start).expect("randomness");
        for i in 0..PER_PROJECT - 1 {
            let at = later + Duration::from_millis(1 + i as u64);
            sessions.open_at(project(1), at).expect("randomness");
        }
        assert_eq!(sessions.len(), PER_PROJECT + 1);
        assert!(sessions.project_at(&second, later).is_none());
        assert!(sessions.project_at(&first, later).is_some());
        assert!(
            sessions.project_at(&other, later).is_some(),
            "one project's sign-ins do not sign another's out"
        );
    }

    #[test]
    fn when_all_are_full_the_project_holding_the_most_gives_way() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let mut at = start;
        let mut tick = || {
            at += Duration::from_millis(1);
            at
        };
        // The oldest of all is a small project's; project 1's is next.
        let small_oldest = sessions.open_at(project(2), tick()).expect("randomness");
        let oldest = sessions.open_at(project(1), tick()).expect("randomness");
        // Project 1 full; the rest of the room shared by smaller ones.
        for _ in 0..PER_PROJECT - 1 {
            sessions.open_at(project(1), tick()).expect("randomness");
        }
        let share = PER_PROJECT / 2;
        for i in 0..MAX_SESSIONS - PER_PROJECT - 1 {
            let p = 2 + (i / share) as i64;
            sessions.open_at(project(p), tick()).expect("randomness");
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        // A small project's session, then one more anywhere: the small
        // project's is kept, the biggest project loses its least recent.
        let now = tick();
        let small = sessions.open_at(project(99), now).expect("randomness");
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert!(sessions.project_at(&small, now).is_some());
        assert!(sessions.project_at(&small_oldest, now).is_some());
        assert!(sessions.project_at(&oldest, now).is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(
            from_cookie_header("a=1; sightline_session=abc ; b=2"),
            Some("abc")
        );
        assert_eq!(from_cookie_header("sightline_session="), None);
        assert_eq!(from_cookie_header("xsightline_session=abc"), None);
        assert_eq!(from_cookie_header(""), None);
    }
}
