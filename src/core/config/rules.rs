//! The single-value rules: paths, names, permissions, durations, sizes.

use super::*;

/// `prefix.key`, the field path of a key (just `key` at the top).
pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// What a YAML value is, for messages.
pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

pub(super) fn varint_len(mut v: usize) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub(super) fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Encoded size of a ListAndWatchResponse with devices `"0"`..`"n-1"`, each
/// with a health word of `health_len` bytes and no topology.
pub fn list_and_watch_size(n: u64, health_len: usize) -> usize {
    let mut total = 0usize;
    let mut start = 0u64;
    // Group IDs by digit count: all IDs in a group encode to the same size.
    while start < n {
        let d = digits(start);
        let end = if d >= 19 {
            n
        } else {
            (10u64.pow(d as u32)).min(n)
        };
        let device = 1 + varint_len(d) + d + 1 + varint_len(health_len) + health_len;
        let entry = 1 + varint_len(device) + device;
        total = total.saturating_add(entry.saturating_mul((end - start) as usize));
        start = end;
    }
    total
}

/// Encoded size of a length-delimited field (tag 1 byte) of `len` bytes,
/// as proto3 writes it: an empty string is left out.
fn string_field(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + varint_len(len) + len
    }
}

/// Encoded size of a nested message field (tag 1 byte) of `len` bytes.
fn message_field(len: usize) -> usize {
    1 + varint_len(len) + len
}

/// Encoded size of the Allocate answer of a fixed path for one container
/// given every device: an AllocateResponse holding one
/// ContainerAllocateResponse with the envs (the config's, and the lists of
/// what it got) and the Mount or DeviceSpec (PROTOCOL.md §3 field numbers). A map
/// entry carries its key and value even when empty. The device-plugin
/// front's tests hold it to its encoder.
pub fn allocate_answer_size(r: &Resource) -> usize {
    let entry = |k: usize, v: usize| message_field(message_field(k) + message_field(v));
    let mut envs: usize = r.envs.iter().map(|(k, v)| entry(k.len(), v.len())).sum();
    // The lists of what the container got (B20), when it gets every
    // device: all the IDs, the path once.
    let [ids, paths, hosts] = crate::core::given::env_names(&r.resource_name);
    envs += entry(ids.len(), id_list_len(r.num_devices));
    envs += entry(paths.len(), crate::core::given::item(&r.mount_path).len());
    envs += entry(hosts.len(), crate::core::given::item(&r.host_path).len());
    let third = if r.path_type.is_device() {
        string_field(r.permissions.len())
    } else {
        usize::from(r.read_only) * 2
    };
    let path = string_field(r.mount_path.len()) + string_field(r.host_path.len()) + third;
    message_field(envs + message_field(path))
}

/// The length of `"0 1 … n-1"`.
fn id_list_len(n: u32) -> usize {
    let n = u64::from(n);
    let (mut total, mut lo, mut hi, mut digits) = (0u64, 0u64, 10u64, 1u64);
    while lo < n {
        total += digits * (hi.min(n) - lo);
        (lo, hi, digits) = (hi, hi * 10, digits + 1);
    }
    usize::try_from(total + n.saturating_sub(1)).unwrap_or(usize::MAX)
}

/// The most slots one device of a resource whose devices come and go may
/// have: every slot ID as long as an ID can be, all Unhealthy, in one
/// ListAndWatch message.
pub fn max_slots() -> u32 {
    let entry =
        crate::core::discovery::entry_size(crate::core::discovery::MAX_ID_LEN, UNHEALTHY.len());
    u32::try_from(MAX_MESSAGE_BYTES / entry).unwrap_or(u32::MAX)
}

/// The largest device count whose all-Unhealthy list fits the kubelet's limit.
pub fn max_devices() -> u64 {
    let (mut lo, mut hi) = (1u64, 1u64 << 32);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if list_and_watch_size(mid, UNHEALTHY.len()) <= MAX_MESSAGE_BYTES {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Normalises an absolute path: collapses `//` and `.`, drops a trailing `/`.
/// Refuses relative paths and any `..` element before anything touches the
/// filesystem.
///
/// # Errors
///
/// A message saying what is wrong.
pub fn normalize_path(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.contains('\0') {
        return Err("must not contain a NUL byte".into());
    }
    if !p.starts_with('/') {
        return Err(format!("`{p}` must be an absolute path (start with `/`)"));
    }
    let mut parts = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("`{p}` must not contain `..`")),
            other => parts.push(other),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Why a path is sensitive (B16), or `None`: see [`crate::core::sensitive`].
pub fn sensitive_rule(path: &str) -> Option<crate::core::sensitive::Category> {
    crate::core::sensitive::classify(path)
}

/// The characters a socket name may use: ASCII letters, digits, `.`, `_`
/// and `-`, starting with a letter or digit. Nothing in it means anything
/// to a path (`/`), to gRPC's URI parser (`%`, `?`, `#`, `:`) or to the
/// kubelet's plugin watcher (a leading `.`), so the name the kubelet is told
/// and the file gRPC binds are one and the same.
///
/// # Errors
///
/// A message naming the first offending character, or the reserved name.
pub fn validate_socket_name(s: &str) -> Result<(), String> {
    let Some(first) = s.chars().next() else {
        return Err("must not be empty".into());
    };
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{}` contains {bad:?}: a socket name may use only ASCII letters, digits, `.`, `_` and `-`",
            s.escape_debug()
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "`{s}` must start with a letter or digit (the kubelet's plugin watcher ignores names starting with `.`)"
        ));
    }
    if s == KUBELET_SOCKET || s == CHECKPOINT_FILE {
        return Err(format!("`{s}` belongs to the kubelet"));
    }
    Ok(())
}

pub(super) fn validate_permissions(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty: use letters from `rwm`".into());
    }
    let mut seen = [false; 3];
    for c in p.chars() {
        let i = match c {
            'r' => 0,
            'w' => 1,
            'm' => 2,
            _ => return Err(format!("`{p}` may contain only the letters r, w and m")),
        };
        if seen[i] {
            return Err(format!("`{p}` repeats `{c}`"));
        }
        seen[i] = true;
    }
    Ok(())
}

pub(super) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

pub(super) fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// The kubelet's `IsExtendedResourceName` check (PROTOCOL.md §3.1), with a
/// message saying which rule failed.
///
/// # Errors
///
/// A message naming the rule the name breaks.
pub fn validate_extended_resource_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{name}` is not a valid extended resource name: {why}"
        ))
    };
    let Some((domain, part)) = name.split_once('/') else {
        return bad("it needs a domain prefix, e.g. `example.com/disk`");
    };
    if name.contains("kubernetes.io/") {
        return bad("the `kubernetes.io/` prefix is reserved");
    }
    if name.starts_with("requests.") {
        return bad("names starting with `requests.` are reserved for quota");
    }
    if part.contains('/') {
        return bad("it may contain only one `/`");
    }
    let prefix = format!("requests.{domain}");
    if domain.is_empty() || !is_dns_subdomain(&prefix) {
        return bad("the domain must be lower-case letters, digits, `-` and `.`, each label starting and ending alphanumeric");
    }
    if prefix.len() > 253 {
        return bad("the domain must be at most 244 characters");
    }
    if part.len() > 63 {
        return bad("the part after `/` must be at most 63 characters");
    }
    if !is_qualified_name_part(part) {
        return bad("the part after `/` must be letters, digits, `-`, `_` or `.`, starting and ending alphanumeric");
    }
    Ok(())
}

/// Go's `time.ParseDuration` syntax, or an integer of nanoseconds (what the
/// original project's config accepted).
pub(super) fn parse_interval(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(ns) => Ok(Duration::from_nanos(ns)),
            None => Err(format!("`{n}` must be a whole, non-negative number of nanoseconds, or a duration like `10s`")),
        },
        Value::String(s) => parse_go_duration(s),
        other => Err(format!("expected a duration like `10s`, found {}", kind_of(other))),
    }
}

/// Parses a Go duration string (`1h2m3.5s`, `500ms`, `250us`), non-negative.
///
/// # Errors
///
/// A message naming the bad duration.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("`{s}` is not a duration: use a number with a unit, e.g. `500ms`, `10s`, `1m`");
    let mut rest = s.trim();
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest.starts_with('-') {
        return Err(format!("`{s}` must not be negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = tail;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(format!("`{s}` is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// The closest known key, when it is close enough to be a plausible typo.
pub(super) fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (levenshtein(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

pub(super) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
