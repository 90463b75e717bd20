//! DeviceClasses for `deploy/dra/` (B18, B19): one per resource, selecting
//! the driver's devices of that resource by their `resource` attribute, so a
//! claim asks for `deviceClassName: <class>` and a CEL selector narrows it;
//! and naming the resource as its `extendedResourceName`, so a pod that asks
//! `limits: {<resource>: 1}` is served by DRA on nodes whose allocatable for
//! it is 0 or absent (KEP-5004), by the device plugin elsewhere.
//! Rendered from the config by `make dra-classes`, checked in sync by
//! `make test`, as the admission policy is.

use super::names::{hash_hex, is_dns_subdomain};
use crate::core::config::Config;

/// The DeviceClass of resource `name` (`example.com/data` →
/// `data.example.com`): a DNS subdomain, hashed when the name cannot
/// become one.
pub fn class_name(resource: &str) -> String {
    let (domain, name) = resource.split_once('/').unwrap_or(("", resource));
    let name: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let plain = if domain.is_empty() {
        name
    } else {
        format!("{name}.{domain}")
    };
    if is_dns_subdomain(&plain) {
        return plain;
    }
    format!("hostpath-{}", hash_hex(resource))
}

/// A JSON string is a YAML scalar: quoting without a YAML library.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The DeviceClasses of every resource in `config`, for `driver`.
pub fn render(config: &Config, driver: &str, source: &str) -> String {
    let mut out = format!(
        "# Generated from {source} by `make dra-classes`: do not edit.\n\
         # One DeviceClass per resource of the config, for nodes that serve it\n\
         # through DRA (the DaemonSet of deploy/dra/, or `api: dra`); its\n\
         # extendedResourceName lets pods that ask `limits:` use it there.\n"
    );
    for r in &config.resources {
        let selector = format!(
            "device.driver == {} && device.attributes[{}].resource == {}",
            quoted(driver),
            quoted(driver),
            quoted(&r.resource_name)
        );
        out.push_str(&format!(
            "---\n\
             apiVersion: resource.k8s.io/v1\n\
             kind: DeviceClass\n\
             metadata:\n  name: {}\n\
             spec:\n  extendedResourceName: {}\n  selectors:\n    - cel:\n        expression: {}\n",
            class_name(&r.resource_name),
            quoted(&r.resource_name),
            quoted(&selector)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_subdomains() {
        assert_eq!(class_name("example.com/data"), "data.example.com");
        assert_eq!(
            class_name("hostpath-device.k8s.io/sample"),
            "sample.hostpath-device.k8s.io"
        );
        assert_eq!(class_name("example.com/Big_Disk"), "big-disk.example.com");
        let odd = class_name("example.com/-x-");
        assert!(
            odd.starts_with("hostpath-") && is_dns_subdomain(&odd),
            "{odd}"
        );
    }

    #[test]
    fn one_class_per_resource_selecting_by_attribute() {
        let c = crate::core::config::parse(
            "resources:\n- {resourceName: example.com/a, hostPath: {path: /a}}\n\
             - {resourceName: example.com/b, hostPath: {path: /b}}\n",
            "c",
            std::path::Path::new("/d"),
        )
        .unwrap()
        .config;
        let y = render(&c, "hostpath-device.k8s.io", "c.yaml");
        assert_eq!(y.matches("kind: DeviceClass").count(), 2);
        assert!(y.contains("name: a.example.com"));
        assert!(y.contains("extendedResourceName: \"example.com/b\"\n"));
        assert!(y.contains(
            r#"expression: "device.driver == \"hostpath-device.k8s.io\" && device.attributes[\"hostpath-device.k8s.io\"].resource == \"example.com/b\"""#
        ));
    }
}
