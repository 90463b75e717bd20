//! Looking again at one entry after an inotify event named it (issue 20,
//! item 10): for a resource with one plain pattern, an event in a
//! directory its matches live in (a leaf) is checked alone, with the same
//! checks as a full scan, so hotplug costs what changed, not the tree.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::{entry, id, join_host, paired, At, Filter, Found, Step};
use crate::core::resource::{Discovery, Group, PathRule, Source};

/// A directory where the matches of a resource with one plain pattern
/// live: an inotify event there names the one entry to look at again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Where it is, under the host root.
    pub real: PathBuf,
    /// As the kubelet sees it.
    pub host: String,
}

/// The one rule of a discovery whose devices are each one match of one
/// pattern (one group of one path): the case an event can update alone.
pub fn single_rule(d: &Discovery) -> Option<(&PathRule, u32)> {
    match d.groups.as_slice() {
        [Group {
            source: Source::Paths(rules),
            count,
        }] if rules.len() == 1 => Some((&rules[0], *count)),
        _ => None,
    }
}

/// Looks at entries of leaf directories again, after inotify events named
/// them: for each `(leaf, name)`, the ID that entry has (or would have) and
/// the device it is now (`None`: none). The same checks as a full scan's,
/// for a [`single_rule`] discovery (`None` for any other); the mount table
/// is read once for the batch; O(1) per entry whatever the number of
/// matches.
pub fn look_again(
    host_root: &Path,
    d: &Discovery,
    allow_sensitive: bool,
    require_mount_point: bool,
    names: &[(Leaf, String)],
    problems: &mut BTreeSet<String>,
) -> Option<Vec<(String, Option<Found>)>> {
    let (rule, count) = single_rule(d)?;
    let comp = rule.components.last()?;
    let mounts = super::mount_table(require_mount_point);
    let f = Filter {
        host_root,
        allow_sensitive,
        require_mount_point,
        mounts: mounts.as_ref(),
    };
    let mut out = Vec::with_capacity(names.len());
    for (leaf, name) in names {
        let id = id::device_id(&join_host(&leaf.host, name), &id::Suffix::default(), count);
        let found = one(&f, rule, comp, leaf, name, problems).map(|m| {
            let p = paired(std::slice::from_ref(rule), &[&m], None);
            Found {
                id: id.clone(),
                grants: p.grants,
                slots: count,
                exclusive: None,
            }
        });
        out.push((id, found));
    }
    Some(out)
}

/// The match the entry `name` of `leaf` is now, if any.
fn one(
    f: &Filter<'_>,
    rule: &PathRule,
    comp: &super::Component,
    leaf: &Leaf,
    name: &str,
    problems: &mut BTreeSet<String>,
) -> Option<super::Match> {
    if !comp.matches(name) {
        return None;
    }
    let ft = fs::symlink_metadata(leaf.real.join(name)).ok()?.file_type();
    let at = At {
        host: leaf.host.clone(),
        real: leaf.real.clone(),
        linked: false,
        captures: Vec::new(),
    };
    let mut no_hooks = |_: &Path| {};
    let named = (name.to_string(), ft);
    match entry(
        f,
        rule,
        comp,
        &at,
        named,
        true,
        false,
        &mut no_hooks,
        problems,
    ) {
        Step::Hit(m) => Some(m),
        _ => None,
    }
}
