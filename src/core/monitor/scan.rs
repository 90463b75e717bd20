//! Scans of resources whose devices come and go (B15), on the monitor's
//! workers: a full scan (every directory watched before it is read,
//! within the daemon's watch budget), or a look at the single entries
//! events named (issue 20, item 10).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use inotify::{WatchDescriptor, Watches};

use super::{mask, settle_watches, Entry, Shared, UNWATCHED_RESCAN};
use crate::core::discovery::Leaf;
use crate::core::state::ResourceState;

/// The entries named by events that this check can look at alone: none
/// (so a full scan) when something else changed, a full scan is due, or
/// the leaves were found with other settings.
pub(super) fn names_to_look_at(
    e: &mut Entry,
    resource: &Arc<crate::core::resource::Resource>,
    now: Instant,
) -> Vec<(Leaf, String)> {
    let names = std::mem::take(&mut e.names);
    let current = e
        .leaves_of
        .as_ref()
        .is_some_and(|r| Arc::ptr_eq(r, resource));
    if e.full || now >= e.full_due || !current {
        return Vec::new();
    }
    let mut out: Vec<(Leaf, String)> = names
        .into_iter()
        .filter_map(|(wd, n)| e.leaves.get(&wd).map(|l| (l.clone(), n)))
        .collect();
    out.sort_by(|a, b| (&a.0.real, &a.1).cmp(&(&b.0.real, &b.1)));
    out.dedup();
    out
}

/// A look at single entries could not be merged (the settings changed, or
/// no full scan has been merged yet): scan everything instead.
pub(super) struct NeedsFullScan;

/// Looks at the entries events named, each alone, and merges what they
/// are now: work in proportion to what changed, not to the tree.
pub(super) fn look_again(
    shared: &Shared,
    state: &ResourceState,
    resource: &Arc<crate::core::resource::Resource>,
    names: Vec<(Leaf, String)>,
) -> Result<Option<Instant>, NeedsFullScan> {
    let d = resource.discovery.as_ref().ok_or(NeedsFullScan)?;
    let mut problems = BTreeSet::new();
    let updates = crate::core::discovery::look_again(
        &shared.host_root,
        d,
        resource.allow_sensitive_path,
        resource.require_mount_point,
        &names,
        &mut problems,
    )
    .ok_or(NeedsFullScan)?;
    state
        .merge_names(updates, problems, Instant::now(), resource)
        .map(|m| m.next_removal)
        .ok_or(NeedsFullScan)
}

/// Scans a resource whose devices come and go (B15): each directory the
/// scan looks into is watched before it is read (and the watch counted for
/// the resource at once, so no event on it is missed), watches the scan no
/// longer needs are dropped, and the result is merged into the resource's
/// device set. Returns when the next vanished device is due to be removed.
pub(super) fn scan(
    shared: &Shared,
    id: u64,
    state: &Arc<ResourceState>,
    resource: &Arc<crate::core::resource::Resource>,
    progress: &AtomicU64,
) -> Result<Option<Instant>, NeedsFullScan> {
    let Some(d) = resource.discovery.as_ref() else {
        return Ok(None);
    };
    let mut memory = state.scan_memory();
    let mut hooks = ScanHooks {
        shared,
        id,
        watches: shared.watches.clone(),
        wds: Vec::new(),
        missed: 0,
        why: None,
        progress,
        dirs: HashMap::new(),
        leaves: HashMap::new(),
    };
    let found = crate::core::discovery::scan(
        &shared.host_root,
        d,
        resource.allow_sensitive_path,
        resource.require_mount_point,
        &mut memory,
        &mut hooks,
    );
    let ScanHooks {
        wds,
        missed,
        why,
        leaves,
        ..
    } = hooks;
    {
        let mut inner = shared.lock();
        if !settle_watches(shared, &mut inner, id, state, wds) {
            return Ok(None);
        }
        if let Some(e) = inner.entries.get_mut(&id) {
            e.leaves = leaves;
            e.leaves_of = Some(resource.clone());
        }
    }
    let unwatched = note_unwatched(shared, id, resource, missed, why);
    let big = found.devices.len() >= crate::util::TRIM_AFTER;
    let due = state
        .merge_scan(found, Instant::now(), resource, memory)
        .and_then(|m| m.next_removal);
    if big {
        crate::util::trim_heap();
    }
    let fallback = unwatched.then(|| Instant::now() + UNWATCHED_RESCAN);
    Ok(match (due, fallback) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

pub(super) fn nanos_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// One scan's hooks: each directory is watched before it is read (and
/// counted for the resource at once, so no event on it is missed), within
/// the daemon's watch budget; progress is stamped for the dispatcher.
struct ScanHooks<'a> {
    shared: &'a Shared,
    id: u64,
    watches: Option<Watches>,
    wds: Vec<WatchDescriptor>,
    /// Directories that could not be watched, and the first reason.
    missed: usize,
    why: Option<String>,
    progress: &'a AtomicU64,
    /// The watch of each directory watched, to name the leaves by watch.
    dirs: HashMap<PathBuf, WatchDescriptor>,
    leaves: HashMap<WatchDescriptor, Leaf>,
}

impl crate::core::discovery::Hooks for ScanHooks<'_> {
    fn watch(&mut self, dir: &Path) {
        self.progress();
        let Some(w) = self.watches.as_mut() else {
            return;
        };
        match w.add(dir, mask()) {
            Ok(wd) => {
                if self.wds.contains(&wd) {
                    self.dirs.insert(dir.to_path_buf(), wd);
                    return;
                }
                let budget = self.shared.watch_budget;
                let mut inner = self.shared.lock();
                if !inner.by_wd.contains_key(&wd) && inner.by_wd.len() >= budget {
                    // Over the daemon's own budget: not kept.
                    drop(inner);
                    let _ = w.remove(wd);
                    self.missed += 1;
                    self.why.get_or_insert_with(|| {
                        format!("the daemon's budget of {budget} watches is used")
                    });
                    return;
                }
                inner.by_wd.entry(wd.clone()).or_default().insert(self.id);
                drop(inner);
                self.dirs.insert(dir.to_path_buf(), wd.clone());
                self.wds.push(wd);
            }
            Err(e) => {
                // ENOSPC: the kernel's per-user limit is reached.
                self.missed += 1;
                self.why.get_or_insert_with(|| e.to_string());
            }
        }
    }

    fn leaf(&mut self, leaf: Leaf) {
        if let Some(wd) = self.dirs.get(&leaf.real) {
            self.leaves.insert(wd.clone(), leaf);
        }
    }

    fn progress(&mut self) {
        self.progress.store(
            nanos_since(self.shared.epoch, Instant::now()),
            Ordering::Relaxed,
        );
    }
}

/// Records whether a scan watched every directory it reached, saying so
/// once when that changes; returns whether some were left unwatched.
fn note_unwatched(
    shared: &Shared,
    id: u64,
    resource: &crate::core::resource::Resource,
    missed: usize,
    why: Option<String>,
) -> bool {
    let unwatched = missed > 0;
    let was = match shared.lock() {
        // Shutting down: the inotify instance may be released already.
        inner if inner.stop => return unwatched,
        mut inner => match inner.entries.get_mut(&id) {
            Some(e) => std::mem::replace(&mut e.unwatched, unwatched),
            None => return unwatched,
        },
    };
    match (was, unwatched) {
        (false, true) => log::warn!(
            "{}: cannot watch {missed} of the directories it scans ({}): devices there are \
             seen by a rescan every {:?} instead of at once",
            resource.resource_name,
            why.unwrap_or_default(),
            UNWATCHED_RESCAN
        ),
        (true, false) => log::info!(
            "{}: every directory it scans is watched again",
            resource.resource_name
        ),
        _ => {}
    }
    unwatched
}
