//! This node's client connections, by id and by user: where a command
//! from the server API (see `control`) finds the connections it is for.
//!
//! A connection is listed from `Node::connect` until it is dropped; its
//! user is the session attribute [`USER`], indexed whenever the session is
//! set. Connections of another node are not here: commands reach every
//! node, and each finds its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::inbox::Inbox;
use super::lock;

/// The reserved session attribute naming a connection's user.
pub const USER: &str = "user";

const SHARDS: usize = 16;

/// A connection's id across nodes: its node's id, a dash, its local id.
pub(crate) fn connection_id(node: &str, local: u64) -> String {
    format!("{node}-{local}")
}

/// The local id in `id`, if `id` names a connection of node `node`.
pub(crate) fn local_id(node: &str, id: &str) -> Option<u64> {
    id.strip_prefix(node)?.strip_prefix('-')?.parse().ok()
}

#[derive(Debug)]
struct Entry {
    inbox: Arc<Inbox>,
    user: Option<Arc<str>>,
}

/// This node's connections by local id, and the ids of each user's.
#[derive(Debug)]
pub(crate) struct Directory {
    shards: Box<[Mutex<HashMap<u64, Entry>>]>,
    users: Mutex<HashMap<Arc<str>, Vec<u64>>>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            users: Mutex::default(),
        }
    }
}

impl Directory {
    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        lock(&self.shards[(id % SHARDS as u64) as usize])
    }

    /// List connection `id`.
    pub(crate) fn add(&self, id: u64, inbox: Arc<Inbox>) {
        self.shard(id).insert(id, Entry { inbox, user: None });
    }

    /// Connection `id` belongs to `user` now (`None`: anonymous).
    pub(crate) fn set_user(&self, id: u64, user: Option<&str>) {
        let old = {
            let mut shard = self.shard(id);
            let Some(entry) = shard.get_mut(&id) else {
                return;
            };
            if entry.user.as_deref() == user {
                return;
            }
            std::mem::replace(&mut entry.user, user.map(Arc::from))
        };
        let mut users = lock(&self.users);
        if let Some(old) = old {
            forget(&mut users, &old, id);
        }
        if let Some(user) = user {
            users.entry(Arc::from(user)).or_default().push(id);
        }
    }

    /// Connection `id` is gone.
    pub(crate) fn remove(&self, id: u64) {
        let Some(entry) = self.shard(id).remove(&id) else {
            return;
        };
        if let Some(user) = entry.user {
            forget(&mut lock(&self.users), &user, id);
        }
    }

    /// Connection `id`'s inbox, if it is open.
    pub(crate) fn connection(&self, id: u64) -> Option<Arc<Inbox>> {
        self.shard(id).get(&id).map(|e| e.inbox.clone())
    }

    /// The inboxes of `user`'s open connections on this node.
    pub(crate) fn user(&self, user: &str) -> Vec<Arc<Inbox>> {
        let ids = lock(&self.users).get(user).cloned().unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| self.connection(id))
            .collect()
    }

    /// Distinct users with a connection here.
    pub(crate) fn user_count(&self) -> usize {
        lock(&self.users).len()
    }
}

fn forget(users: &mut HashMap<Arc<str>, Vec<u64>>, user: &str, id: u64) {
    if let Some(ids) = users.get_mut(user) {
        ids.retain(|i| *i != id);
        if ids.is_empty() {
            users.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_name_their_node() {
        let id = connection_id("ab12", 7);
        assert_eq!(local_id("ab12", &id), Some(7));
        assert_eq!(local_id("ab1", &id), None);
        assert_eq!(local_id("ab12", "ab12-x"), None);
    }

    #[test]
    fn users_are_indexed_until_their_connections_go() {
        let directory = Directory::default();
        for id in 1..=3 {
            directory.add(id, Arc::new(Inbox::new(4)));
        }
        directory.set_user(1, Some("ann"));
        directory.set_user(2, Some("ann"));
        directory.set_user(3, Some("bob"));
        assert_eq!(directory.user("ann").len(), 2);
        assert_eq!(directory.user_count(), 2);
        directory.set_user(3, None);
        assert!(directory.user("bob").is_empty());
        directory.remove(1);
        assert_eq!(directory.user("ann").len(), 1);
        directory.remove(2);
        assert_eq!(directory.user_count(), 0);
        assert!(directory.connection(3).is_some());
    }
}
