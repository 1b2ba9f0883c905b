//! Idle outbound connections kept for the next message to the same host.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// What the pool needs of a connection.
pub(super) trait Idle: Send + 'static {
    /// Still usable for another transaction.
    fn reusable(&self) -> bool;
    /// Says goodbye to the peer and closes.
    fn quit(self) -> impl Future<Output = ()> + Send + 'static;
}

pub(super) struct Pool<K, C> {
    keepalive: Duration,
    state: Mutex<State<K, C>>,
}

struct State<K, C> {
    idle: HashMap<K, Vec<(C, Instant)>>,
    /// Whether a sweeper task is running. There is at most one, and it ends when nothing
    /// is idle: a busy relay releases a connection per message, and a timer task per
    /// release would be thousands of sleeping tasks.
    sweeping: bool,
}

impl<K, C> Default for Pool<K, C>
where
    K: Eq + Hash + Send + 'static,
    C: Idle,
{
    fn default() -> Pool<K, C> {
        Pool::new(super::SESSION_KEEPALIVE)
    }
}

impl<K, C> Pool<K, C>
where
    K: Eq + Hash + Send + 'static,
    C: Idle,
{
    pub(super) fn new(keepalive: Duration) -> Pool<K, C> {
        Pool {
            keepalive,
            state: Mutex::new(State {
                idle: HashMap::new(),
                sweeping: false,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K, C>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently released connection for `key` that is still fresh and usable.
    pub(super) fn take(&self, key: &K) -> Option<C> {
        let mut st = self.state();
        let list = st.idle.get_mut(key)?;
        let now = Instant::now();
        while let Some((c, since)) = list.pop() {
            if now.duration_since(since) < self.keepalive && c.reusable() {
                return Some(c);
            }
            tokio::spawn(c.quit());
        }
        None
    }

    pub(super) fn put(self: &Arc<Self>, key: K, conn: C) {
        let mut st = self.state();
        st.idle.entry(key).or_default().push((conn, Instant::now()));
        if !st.sweeping {
            st.sweeping = true;
            tokio::spawn(self.clone().sweep());
        }
    }

    /// Closes connections as they pass the keepalive, until none is left idle.
    async fn sweep(self: Arc<Self>) {
        let mut next = Instant::now() + self.keepalive;
        loop {
            tokio::time::sleep_until(next).await;
            let mut st = self.state();
            let now = Instant::now();
            let mut oldest: Option<Instant> = None;
            for list in st.idle.values_mut() {
                let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(list)
                    .into_iter()
                    .partition(|(_, since)| now.duration_since(*since) >= self.keepalive);
                *list = keep;
                for (c, _) in old {
                    tokio::spawn(c.quit());
                }
                if let Some(first) = list.iter().map(|(_, since)| *since).min() {
                    oldest = Some(oldest.map_or(first, |o| o.min(first)));
                }
            }
            st.idle.retain(|_, l| !l.is_empty());
            match oldest {
                Some(o) => next = o + self.keepalive,
                None => {
                    st.sweeping = false;
                    return;
                }
            }
        }
    }

    #[cfg(test)]
    fn sweeping(&self) -> bool {
        self.state().sweeping
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.state().idle.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Fake {
        id: u32,
        reusable: bool,
        quits: Arc<AtomicUsize>,
    }

    impl Idle for Fake {
        fn reusable(&self) -> bool {
            self.reusable
        }
        fn quit(self) -> impl Future<Output = ()> + Send + 'static {
            let quits = self.quits;
            async move {
                quits.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_sweeper_closes_what_passed_the_keepalive_and_then_ends() {
        let pool: Arc<Pool<&str, Fake>> = Arc::new(Pool::new(Duration::from_secs(5)));
        let quits = Arc::new(AtomicUsize::new(0));
        let conn = || Fake {
            id: 0,
            reusable: true,
            quits: quits.clone(),
        };
        let tasks_before = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        for _ in 0..1000 {
            pool.put("sink", conn());
        }
        settle().await;
        assert_eq!(
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
                - tasks_before,
            1
        );

        tokio::time::sleep(Duration::from_secs(3)).await;
        pool.put("other", conn());
        tokio::time::sleep(Duration::from_millis(2100)).await;
        settle().await;
        assert_eq!(quits.load(Ordering::SeqCst), 1000);
        assert_eq!(pool.idle(), 1);
        assert!(pool.sweeping());

        tokio::time::sleep(Duration::from_secs(3)).await;
        settle().await;
        assert_eq!(quits.load(Ordering::SeqCst), 1001);
        assert!(!pool.sweeping());

        // Released again later: a new sweeper starts.
        pool.put("sink", conn());
        assert!(pool.sweeping());
    }

    #[tokio::test(start_paused = true)]
    async fn take_returns_the_newest_usable_connection_and_quits_unusable_ones() {
        let pool: Arc<Pool<&str, Fake>> = Arc::new(Pool::new(Duration::from_secs(5)));
        let quits = Arc::new(AtomicUsize::new(0));
        let conn = |id, reusable| Fake {
            id,
            reusable,
            quits: quits.clone(),
        };
        pool.put("sink", conn(1, true));
        pool.put("sink", conn(2, true));
        // Closed by the peer while idle: the next take skips it.
        pool.put("sink", conn(3, false));
        assert!(pool.take(&"elsewhere").is_none());
        assert_eq!(pool.take(&"sink").map(|c| c.id), Some(2));
        settle().await;
        assert_eq!(quits.load(Ordering::SeqCst), 1);
        assert_eq!(pool.take(&"sink").map(|c| c.id), Some(1));
        assert!(pool.take(&"sink").is_none());
    }
}
