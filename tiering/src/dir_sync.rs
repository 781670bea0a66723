//! Group commit of directory syncs: concurrent migrations share one `sync_dir`.
//!
//! Each migration renames its file and then needs *a* directory sync that started after its
//! rename returned. [`DirSyncGroup::sync_after_rename`] numbers renames in the order they
//! completed; one caller at a time runs `sync_dir` for every rename numbered so far, and the
//! others wait for it: a sync covering their rename makes them durable too. A failed sync
//! fails every rename it covered (a later successful sync does not make up for it: retrying a
//! failed sync proves nothing), so each of those migrations is abandoned and retried.

use parking_lot::{Condvar, Mutex};

use crate::error::{IoOp, Result, TieringError};

#[derive(Default)]
struct GroupState {
    /// Renames registered so far (tickets 1..=renamed).
    renamed: u64,
    /// Every ticket up to this one was covered by a successful sync.
    synced_through: u64,
    /// A sync is running.
    in_progress: bool,
    /// Ticket ranges `(from, through]` covered by failed syncs, with the error text.
    failed: Vec<(u64, u64, String)>,
}

#[derive(Default)]
pub(crate) struct DirSyncGroup {
    state: Mutex<GroupState>,
    finished: Condvar,
}

impl DirSyncGroup {
    /// Call right after a rename returned: returns once a directory sync that started after
    /// it succeeded, or with the error of the sync that covered it. `sync_dir` runs at most
    /// once per call, and only while no other sync of this group runs.
    pub(crate) fn sync_after_rename(
        &self,
        dir_name: &str,
        sync_dir: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let mut sync_dir = Some(sync_dir);
        let mut state = self.state.lock();
        state.renamed += 1;
        let ticket = state.renamed;
        loop {
            if let Some((_, _, error)) = state
                .failed
                .iter()
                .find(|(from, through, _)| *from < ticket && ticket <= *through)
            {
                return Err(TieringError::SyncFailed {
                    op: IoOp::SyncDir,
                    file: dir_name.to_owned(),
                    source: std::io::Error::other(format!(
                        "a shared directory sync failed: {error}"
                    )),
                });
            }
            if state.synced_through >= ticket {
                return Ok(());
            }
            if state.in_progress {
                self.finished.wait(&mut state);
                continue;
            }
            // Lead: one sync for every rename registered so far.
            let Some(sync) = sync_dir.take() else {
                // Unreachable: a caller leads at most once, and its own sync covers it.
                self.finished.wait(&mut state);
                continue;
            };
            let (from, through) = (state.synced_through, state.renamed);
            state.in_progress = true;
            drop(state);
            let outcome = sync();
            state = self.state.lock();
            state.in_progress = false;
            match &outcome {
                Ok(()) => state.synced_through = state.synced_through.max(through),
                // Kept for good (failures are rare): a waiter covered by it may not have
                // looked yet.
                Err(error) => state.failed.push((from, through, error.to_string())),
            }
            self.finished.notify_all();
            return outcome;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn one_caller_syncs_for_itself() {
        let group = DirSyncGroup::default();
        let syncs = AtomicU64::new(0);
        for _ in 0..3 {
            group
                .sync_after_rename("d", || {
                    syncs.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(syncs.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn failed_sync_fails_what_it_covered_only() {
        let group = DirSyncGroup::default();
        let failed = group.sync_after_rename("d", || {
            Err(TieringError::SyncFailed {
                op: IoOp::SyncDir,
                file: "d".into(),
                source: std::io::Error::other("injected"),
            })
        });
        assert!(failed.is_err_and(|e| e.is_sync_failure()));
        group.sync_after_rename("d", || Ok(())).unwrap();
    }

    #[test]
    fn concurrent_callers_share_syncs() {
        let group = DirSyncGroup::default();
        let syncs = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        group
                            .sync_after_rename("d", || {
                                syncs.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(std::time::Duration::from_micros(200));
                                Ok(())
                            })
                            .unwrap();
                    }
                });
            }
        });
        let count = syncs.load(Ordering::Relaxed);
        assert!((1..=400).contains(&count), "{count}");
    }
}
