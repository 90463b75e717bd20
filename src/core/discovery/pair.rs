//! Pairing: a group's matches into devices (by what their wildcards
//! matched, or by position for generic-device-plugin's files whose members'
//! wildcards differ in number), and USB devices into devices (by serial,
//! or serial and port when the serial is not unique).

use std::collections::{BTreeSet, HashMap};

use super::{id, Match, Memory, UsbDevice};
use crate::core::resource::{Grant, NodeRule, PathRule, Subsystem, UsbSelector};
use crate::text::shown;

/// One device of a group before its ID is made.
pub(super) struct Paired {
    /// What it is: its member paths, or its USB identity.
    pub(super) key: String,
    pub(super) suffix: id::Suffix,
    pub(super) grants: Vec<Grant>,
    pub(super) exclusive: Option<Vec<bool>>,
}

/// The USB devices that match a group's selectors. A device with a serial
/// is named by it, and follows it from port to port, unless another
/// device with the same serial is (or once was) present: then each is
/// named by serial and port.
pub(super) fn usb_paired(
    all: &[UsbDevice],
    selectors: &[UsbSelector],
    nodes: &[NodeRule],
    memory: &mut Memory,
) -> Vec<Paired> {
    let mut seen: HashMap<(u16, u16, &str), usize> = HashMap::new();
    for u in all {
        if let Some(s) = &u.serial {
            *seen.entry((u.vendor, u.product, s.as_str())).or_insert(0) += 1;
        }
    }
    for ((v, p, s), n) in seen {
        if n > 1 {
            memory.repeating_serials.insert((v, p, s.to_string()));
        }
    }
    all.iter()
        .filter_map(|u| {
            let selector = selectors.iter().find(|s| s.matches(u))?;
            let grants = usb_grants(u, selector, nodes)?;
            let base = format!("usb:{:04x}:{:04x}", u.vendor, u.product);
            let by_port = match &u.serial {
                Some(s) => memory
                    .repeating_serials
                    .contains(&(u.vendor, u.product, s.clone())),
                None => true,
            };
            let key = match &u.serial {
                Some(s) => format!("{base}:{s}"),
                None => base,
            };
            let (key, port) = match (by_port, id::plain_port(&u.port)) {
                (false, _) => (key, None),
                (true, true) => (key, Some(u.port.clone())),
                // Not the kernel's shape (only a fake sysfs does that):
                // in the key, which is then hashed.
                (true, false) => (format!("{key}|port={}", u.port), None),
            };
            Some(Paired {
                key,
                suffix: id::Suffix { port, group: None },
                grants,
                exclusive: None,
            })
        })
        .collect()
}

/// What a USB device is handed out as: each node rule's nodes, in order.
/// `None` while a rule has none of its nodes yet (a device is listed once
/// all are there, and vanishes when one kind goes).
fn usb_grants(u: &UsbDevice, selector: &UsbSelector, nodes: &[NodeRule]) -> Option<Vec<Grant>> {
    let mut grants = Vec::new();
    for rule in nodes {
        let before = grants.len();
        let place = |default: Option<&String>| {
            rule.mount_path
                .as_ref()
                .or(default)
                .map(|m| Box::<str>::from(m.as_str()))
        };
        if rule.subsystem == Subsystem::Usb {
            if u.raw_present {
                let mut g = Grant::node(&u.node, rule.permissions);
                g.container = place(selector.mount_path.as_ref());
                grants.push(g);
            }
        } else {
            for n in &u.nodes {
                let named = rule.name.as_ref().is_none_or(|(_, c)| c.matches(n.name()));
                if n.subsystem == rule.subsystem && named {
                    let mut g = Grant::node(&n.host, rule.permissions);
                    g.container = place(None);
                    grants.push(g);
                }
            }
        }
        if grants.len() == before {
            return None;
        }
    }
    Some(grants)
}

/// Whether a group's members pair by what their wildcards matched: every
/// member with wildcards has the same number of them. Otherwise (only
/// generic-device-plugin's files may) they pair by position.
pub fn pairs_by_captures(rules: &[PathRule]) -> bool {
    let mut arity = rules.iter().map(PathRule::wildcards).filter(|n| *n > 0);
    let first = arity.next();
    arity.all(|n| Some(n) == first)
}

fn grant(rule: &PathRule, hit: &Match) -> Grant {
    Grant {
        host: hit.host.clone().into_boxed_str(),
        container: rule
            .mount_path
            .as_ref()
            .filter(|p| **p != hit.host)
            .map(|p| p.clone().into_boxed_str()),
        device: hit.node,
        read_only: rule.read_only,
        permissions: rule.permissions,
    }
}

pub(super) fn paired(rules: &[PathRule], hits: &[&Match], exclusive: Option<Vec<bool>>) -> Paired {
    let mut key = String::new();
    let mut grants = Vec::with_capacity(rules.len());
    for (rule, hit) in rules.iter().zip(hits) {
        if !key.is_empty() {
            key.push(',');
        }
        key.push_str(&hit.host);
        grants.push(grant(rule, hit));
    }
    Paired {
        key,
        suffix: id::Suffix::default(),
        grants,
        exclusive,
    }
}

/// A group's matches into devices.
pub(super) fn pair(
    rules: &[PathRule],
    matches: &[Vec<Match>],
    problems: &mut BTreeSet<String>,
) -> Vec<Paired> {
    if pairs_by_captures(rules) {
        by_captures(rules, matches, problems)
    } else {
        zip(rules, matches)
    }
}

/// Pairs members by what their wildcards matched: `pcmC1D0c` goes with
/// `controlC1` (both matched `1`), whatever else is present, so a device
/// present in full is never disturbed by another's missing member. A
/// fixed member (no wildcard) joins every device, at most `limit` of them.
fn by_captures(
    rules: &[PathRule],
    matches: &[Vec<Match>],
    problems: &mut BTreeSet<String>,
) -> Vec<Paired> {
    if matches.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    let fixed = |i: usize| rules[i].wildcards() == 0;
    let cap = (0..rules.len())
        .filter(|&i| fixed(i))
        .map(|i| rules[i].limit as usize)
        .min()
        .unwrap_or(usize::MAX);
    let Some(lead) = (0..rules.len()).find(|&i| !fixed(i)) else {
        let hits: Vec<&Match> = matches.iter().map(|m| &m[0]).collect();
        return vec![paired(rules, &hits, None)];
    };
    let patterned = (0..rules.len()).filter(|&i| !fixed(i)).count();
    // With one member that has wildcards, each of its matches is a device.
    let by_caps: Vec<HashMap<&[String], &Match>> = if patterned > 1 {
        matches
            .iter()
            .map(|m| m.iter().map(|h| (h.captures.as_slice(), h)).collect())
            .collect()
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for lead_hit in &matches[lead] {
        if out.len() >= cap {
            break;
        }
        let hits: Option<Vec<&Match>> = (0..rules.len())
            .map(|i| {
                if fixed(i) {
                    Some(&matches[i][0])
                } else if i == lead {
                    Some(lead_hit)
                } else {
                    by_caps[i].get(lead_hit.captures.as_slice()).copied()
                }
            })
            .collect();
        if let Some(hits) = hits {
            out.push(paired(rules, &hits, None));
        }
    }
    if out.is_empty() && patterned > 1 {
        let names: Vec<&str> = rules.iter().map(|r| r.pattern.as_str()).collect();
        problems.insert(format!(
            "no device: every member of the group ({}) has matches, but their wildcards never matched the same text",
            shown(&names.join(", "))
        ));
    }
    out
}

/// Zips the rules' sorted matches into devices, as generic-device-plugin
/// does, for its files whose members' wildcards differ in number: each
/// rule's matches repeated `limit` times; as many devices as the most
/// matches of any rule, capped by the shortest repeated list. A device so
/// paired is listed only while none of its exclusive paths (`limit` 1)
/// belongs to another device (`DeviceSet::merge` checks).
fn zip(rules: &[PathRule], matches: &[Vec<Match>]) -> Vec<Paired> {
    let natural = matches.iter().map(Vec::len).max().unwrap_or(0);
    let reusable = matches
        .iter()
        .zip(rules)
        .map(|(m, r)| m.len().saturating_mul(r.limit as usize))
        .min()
        .unwrap_or(0);
    let length = natural.min(reusable);
    let exclusive: Vec<bool> = rules.iter().map(|r| r.limit == 1).collect();
    (0..length)
        .map(|k| {
            let hits: Vec<&Match> = matches.iter().map(|m| &m[k % m.len()]).collect();
            paired(rules, &hits, Some(exclusive.clone()))
        })
        .collect()
}
