//! How many request-body bytes the webhook holds at once. The webhook is reachable from every pod
//! of the cluster, and a body may be 3 MiB: 256 requests in flight could hold 768 MiB against a
//! 128 MiB memory limit, and an OOM-killed webhook admits every pod unsteered (failurePolicy
//! Ignore). So the first [`SMALL_BYTES`] of every body are free (a review of an ordinary pod is
//! a few KiB, and never waits on anything here), and bytes beyond draw on one budget shared by
//! all requests, of which one client (an IP address) may hold at most a share: a pod that floods
//! the webhook with big bodies leaves the rest for the API server. A body that does not fit is
//! refused at once (503: the API server retries, or fails open), not queued.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Of each body, what never draws on the budget.
pub const SMALL_BYTES: usize = 64 * 1024;
/// What bodies may hold beyond their first [`SMALL_BYTES`], all requests together: with 256
/// requests in flight, at most 16 MiB + 32 MiB of bodies at once.
pub const BUDGET_BYTES: usize = 32 * 1024 * 1024;
/// What one client may hold of [`BUDGET_BYTES`].
pub const CLIENT_SHARE_BYTES: usize = BUDGET_BYTES / 2;

/// The client a request came from (its peer address), set by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client(pub IpAddr);

/// The shared budget.
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    client_limit: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

impl Default for BodyBudget {
    fn default() -> Self {
        BodyBudget::new(BUDGET_BYTES, CLIENT_SHARE_BYTES)
    }
}

impl BodyBudget {
    pub fn new(limit: usize, client_limit: usize) -> BodyBudget {
        BodyBudget {
            limit,
            client_limit,
            held: Mutex::new(Held::default()),
        }
    }

    /// A reservation of nothing yet, for one body from `client`.
    pub fn reservation(self: &Arc<Self>, client: Option<Client>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            client: client.map(|c| c.0),
            bytes: 0,
        }
    }

    /// Bytes held now, all clients together.
    pub fn held(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What one body holds of the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    client: Option<IpAddr>,
    /// Bytes beyond [`SMALL_BYTES`] reserved.
    bytes: usize,
}

impl Reservation {
    /// Makes room for the body to be `size` bytes long in all; false (and nothing more held)
    /// when the budget or the client's share cannot take it.
    pub fn grow_to(&mut self, size: usize) -> bool {
        let wanted = size.saturating_sub(SMALL_BYTES);
        let Some(more) = wanted.checked_sub(self.bytes).filter(|m| *m > 0) else {
            return true;
        };
        let budget = &self.budget;
        let mut held = budget.lock();
        if held.total + more > budget.limit {
            return false;
        }
        if let Some(client) = self.client {
            let mine = held.by_client.get(&client).copied().unwrap_or(0);
            if mine + more > budget.client_limit {
                return false;
            }
            held.by_client.insert(client, mine + more);
        }
        held.total += more;
        self.bytes += more;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut held = self.budget.lock();
        held.total = held.total.saturating_sub(self.bytes);
        if let Some(client) = self.client
            && let Some(mine) = held.by_client.get_mut(&client)
        {
            *mine = mine.saturating_sub(self.bytes);
            if *mine == 0 {
                held.by_client.remove(&client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(last: u8) -> Option<Client> {
        Some(Client(IpAddr::from([10, 0, 0, last])))
    }

    #[test]
    fn small_bodies_never_draw_on_the_budget() {
        let budget = Arc::new(BodyBudget::new(0, 0));
        let mut r = budget.reservation(client(1));
        assert!(r.grow_to(SMALL_BYTES));
        assert!(!r.grow_to(SMALL_BYTES + 1));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let budget = Arc::new(BodyBudget::new(1000, 1000));
        let mut a = budget.reservation(None);
        let mut b = budget.reservation(None);
        assert!(a.grow_to(SMALL_BYTES + 600));
        assert!(a.grow_to(SMALL_BYTES + 300), "never shrinks, never fails");
        assert!(!b.grow_to(SMALL_BYTES + 401));
        assert!(b.grow_to(SMALL_BYTES + 400));
        assert_eq!(budget.held(), 1000);
        drop(a);
        assert_eq!(budget.held(), 400);
        assert!(b.grow_to(SMALL_BYTES + 1000));
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn one_client_holds_at_most_its_share() {
        let budget = Arc::new(BodyBudget::new(1000, 500));
        let mut flood: Vec<Reservation> = Vec::new();
        for _ in 0..5 {
            let mut r = budget.reservation(client(1));
            assert!(r.grow_to(SMALL_BYTES + 100));
            flood.push(r);
        }
        let mut more = budget.reservation(client(1));
        assert!(!more.grow_to(SMALL_BYTES + 1), "past its share");
        // Another client (the API server) still has the other half.
        let mut api_server = budget.reservation(client(2));
        assert!(api_server.grow_to(SMALL_BYTES + 500));
        drop(flood);
        assert!(more.grow_to(SMALL_BYTES + 100));
        drop((more, api_server));
        assert_eq!(budget.held(), 0);
        assert!(
            budget.lock().by_client.is_empty(),
            "no entry left per client"
        );
    }
}
