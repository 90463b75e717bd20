//! The reload plan (B10), pure: the running resources and the new config
//! in, what to retire, update in place, add and leave alone out.
//!
//! A resource is the same one when its `resourceName`, `socketName` and
//! API are unchanged; a change of any is a retire followed by an add (the
//! old server stops before the new one registers, and a resource moving
//! between the device plugin and DRA is never served through both).

use crate::core::resource::Resource;

/// What one reload does, by index.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Indexes into the running resources that leave.
    pub retire: Vec<usize>,
    /// (running index, new index): same resource, new settings.
    pub update: Vec<(usize, usize)>,
    /// Indexes into the new config of resources to start.
    pub add: Vec<usize>,
    /// Running resources whose settings are identical.
    pub unchanged: Vec<usize>,
}

fn same(a: &Resource, b: &Resource) -> bool {
    a.resource_name == b.resource_name && a.socket_name == b.socket_name && a.api == b.api
}

/// Plans the move from `running` to `new` (each without duplicates, as
/// config validation guarantees).
pub fn plan(running: &[&Resource], new: &[Resource]) -> Plan {
    let mut p = Plan::default();
    for (i, r) in running.iter().enumerate() {
        match new.iter().position(|n| same(n, r)) {
            None => p.retire.push(i),
            Some(j) if new[j] == **r => p.unchanged.push(i),
            Some(j) => p.update.push((i, j)),
        }
    }
    for (j, n) in new.iter().enumerate() {
        if !running.iter().any(|r| same(n, r)) {
            p.add.push(j);
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn resources(text: &str) -> Vec<Resource> {
        crate::core::config::parse(text, "c", Path::new("/d"))
            .unwrap()
            .config
            .resources
    }

    #[test]
    fn keep_update_retire_add_and_rename() {
        let old = resources(
            "resources:\n\
             - {resourceName: example.com/keep, hostPath: {path: /k}}\n\
             - {resourceName: example.com/change, hostPath: {path: /c}}\n\
             - {resourceName: example.com/drop, hostPath: {path: /d}}\n\
             - {resourceName: example.com/renamed, socketName: old.sock, hostPath: {path: /r}}\n",
        );
        let new = resources(
            "resources:\n\
             - {resourceName: example.com/new, hostPath: {path: /n}}\n\
             - {resourceName: example.com/change, numDevices: 3, hostPath: {path: /c}}\n\
             - {resourceName: example.com/keep, hostPath: {path: /k}}\n\
             - {resourceName: example.com/renamed, socketName: new.sock, hostPath: {path: /r}}\n",
        );
        let running: Vec<&Resource> = old.iter().collect();
        let p = plan(&running, &new);
        assert_eq!(p.unchanged, [0]);
        assert_eq!(p.update, [(1, 1)]);
        assert_eq!(p.retire, [2, 3], "a changed socketName retires the old");
        assert_eq!(p.add, [0, 3], "…and adds the new");
    }

    #[test]
    fn identical_configs_change_nothing() {
        let old = resources("resourceName: example.com/a\nhostPath: {path: /a}\n");
        let running: Vec<&Resource> = old.iter().collect();
        let p = plan(&running, &old);
        assert_eq!(
            p,
            Plan {
                unchanged: vec![0],
                ..Plan::default()
            }
        );
        assert_eq!(plan(&[], &old).add, [0]);
        assert_eq!(plan(&running, &[]).retire, [0]);
    }

    #[test]
    fn a_change_of_api_retires_and_adds() {
        let old = resources("resourceName: example.com/a\nhostPath: {path: /a}\n");
        let new = resources("resourceName: example.com/a\napi: dra\nhostPath: {path: /a}\n");
        let running: Vec<&Resource> = old.iter().collect();
        let p = plan(&running, &new);
        assert_eq!((p.retire, p.add), (vec![0], vec![0]));
        assert!(p.update.is_empty());
    }
}
