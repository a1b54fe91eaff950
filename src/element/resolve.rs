//! Dependency resolution with DIB's semantics (element-deps, element-provides,
//! the operating-system requirement), but deterministic and with errors that say
//! how the bad state was reached.
//!
//! Unlike DIB, whether a virtual name is satisfied does not depend on the order
//! elements happen to be expanded in: expansion is repeated until the set of
//! provided names is stable, and an element that a chosen element provides is
//! dropped from the set.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::path::PathBuf;

use super::discovery::ElementSet;
use super::error::{ElementError, join_names, render_chain};
use crate::log;

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// Elements in the order the user named them.
    pub user: &'a [String],
    /// `-n`: do not add `base`.
    pub no_base: bool,
    /// Target architecture (dpkg naming).
    pub arch: &'a str,
    /// DIB_BLOCK_DEVICE_CONFIG is set, so element layouts are not used.
    pub block_device_config_set: bool,
}

/// The elements the resolution starts from: the user's (without duplicates),
/// the default block-device element when `vm` comes without one, and `base`.
pub fn initial_elements(user: &[String], no_base: bool, arch: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in user {
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    let has_vm = out.iter().any(|e| e == "vm");
    let has_block_device = out.iter().any(|e| e.starts_with("block-device-"));
    if has_vm && !has_block_device {
        // Kept for DIB compatibility: vm used to carry the default layout.
        let default = crate::arch::Arch::parse(arch).map_or("block-device-mbr", |a| a.vm_layout);
        out.push(default.to_owned());
    }
    if !no_base && !out.iter().any(|e| e == "base") {
        out.push("base".to_owned());
    }
    out
}

/// Resolves the request into the ordered element list: dependencies first, ties
/// broken by the rank of the user element that pulled an element in, then by name.
pub fn resolve(set: &ElementSet, req: &Request) -> Result<Vec<String>, ElementError> {
    let initial = initial_elements(req.user, req.no_base, req.arch);
    let order = expand_dependencies(set, &initial)?;
    if !req.block_device_config_set {
        check_block_device_layouts(set, &order, req.arch)?;
    }
    Ok(order)
}

/// The named elements and everything they need, in build order, with nothing
/// added (no `base`, no default layout for `vm`): what DIB's element-info
/// computes. Names given twice count once.
pub fn expand_dependencies(
    set: &ElementSet,
    named: &[String],
) -> Result<Vec<String>, ElementError> {
    let mut initial: Vec<String> = Vec::new();
    for name in named {
        if set.get(name).is_none() {
            return Err(unknown_or_virtual(set, name, &[]));
        }
        if !initial.contains(name) {
            initial.push(name.clone());
        }
    }
    let expansion = expand_to_fixpoint(set, &initial);
    let providers = check_providers(set, &expansion)?;
    check_user_not_provided(&initial, &providers)?;
    check_deps_satisfied(set, &expansion, &providers)?;
    check_operating_system(set, &providers)?;
    topological_order(set, &expansion, &initial, &providers)
}

/// The chosen elements and how each was reached.
#[derive(Debug, Default)]
struct Expansion {
    /// Chosen elements, in discovery order.
    chosen: Vec<String>,
    /// Element → the element whose element-deps pulled it in.
    parent: BTreeMap<String, String>,
}

impl Expansion {
    fn contains(&self, name: &str) -> bool {
        self.chosen.iter().any(|c| c == name)
    }

    /// The chain of elements from a user element down to `name`.
    fn chain_to(&self, name: &str) -> Vec<String> {
        let mut chain = vec![name.to_owned()];
        let mut cur = name;
        while let Some(p) = self.parent.get(cur) {
            if chain.contains(p) {
                break;
            }
            chain.push(p.clone());
            cur = p;
        }
        chain.reverse();
        chain
    }
}

/// Expands element-deps until no chosen element is provided by another one.
fn expand_to_fixpoint(set: &ElementSet, initial: &[String]) -> Expansion {
    let mut excluded = BTreeSet::new();
    loop {
        let exp = expand(set, initial, &excluded);
        let provided = provided_names(set, &exp.chosen);
        let newly: Vec<String> = exp
            .chosen
            .iter()
            .filter(|c| !initial.contains(c) && provided.contains_key(*c))
            .filter(|c| !provided[*c].iter().all(|p| p == *c))
            .cloned()
            .collect();
        if newly.is_empty() {
            return exp;
        }
        excluded.extend(newly);
    }
}

/// One breadth-first expansion of element-deps, skipping `excluded` names and
/// names that do not exist (those are checked later, once provides are known).
fn expand(set: &ElementSet, initial: &[String], excluded: &BTreeSet<String>) -> Expansion {
    let mut exp = Expansion {
        chosen: initial.to_vec(),
        ..Default::default()
    };
    let mut queue: VecDeque<String> = initial.iter().cloned().collect();
    while let Some(name) = queue.pop_front() {
        let Some(element) = set.get(&name) else {
            continue;
        };
        for dep in &element.deps {
            if *dep == name || exp.contains(dep) || excluded.contains(dep) {
                continue;
            }
            if set.get(dep).is_some() {
                exp.chosen.push(dep.clone());
                exp.parent.insert(dep.clone(), name.clone());
                queue.push_back(dep.clone());
            }
        }
    }
    warn_self_dependencies(set, &exp.chosen);
    exp
}

fn warn_self_dependencies(set: &ElementSet, chosen: &[String]) {
    for name in chosen {
        if set.get(name).is_some_and(|e| e.deps.contains(name)) {
            log::warn(&format!(
                "element {name} lists itself in element-deps; ignoring that entry"
            ));
        }
    }
}

/// Provided name → the chosen elements that provide it.
fn provided_names(set: &ElementSet, chosen: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in chosen {
        for p in set.get(name).map(|e| e.provides.as_slice()).unwrap_or(&[]) {
            out.entry(p.clone()).or_default().push(name.clone());
        }
    }
    out
}

/// Checks that each provided name has one provider; returns name → provider.
fn check_providers(
    set: &ElementSet,
    exp: &Expansion,
) -> Result<BTreeMap<String, String>, ElementError> {
    let mut out = BTreeMap::new();
    for (name, providers) in provided_names(set, &exp.chosen) {
        if let [first, second, ..] = providers.as_slice() {
            let chain = exp.chain_to(second);
            return Err(ElementError::DuplicateProvider {
                name,
                first: first.clone(),
                second: second.clone(),
                chain: render_chain(&chain[..chain.len() - 1]),
            });
        }
        out.insert(name, providers[0].clone());
    }
    Ok(out)
}

fn check_user_not_provided(
    initial: &[String],
    providers: &BTreeMap<String, String>,
) -> Result<(), ElementError> {
    for name in initial {
        if let Some(provider) = providers.get(name).filter(|p| *p != name) {
            return Err(ElementError::UserElementProvided {
                name: name.clone(),
                provider: provider.clone(),
            });
        }
    }
    Ok(())
}

/// Every dependency must be a chosen element or a name a chosen element provides.
fn check_deps_satisfied(
    set: &ElementSet,
    exp: &Expansion,
    providers: &BTreeMap<String, String>,
) -> Result<(), ElementError> {
    for name in &exp.chosen {
        for dep in set.get(name).map(|e| e.deps.as_slice()).unwrap_or(&[]) {
            if dep == name || exp.contains(dep) || providers.contains_key(dep) {
                continue;
            }
            return Err(unknown_or_virtual(set, dep, &exp.chain_to(name)));
        }
    }
    Ok(())
}

/// The error for a name that is neither chosen nor provided: a virtual name
/// whose providers exist but none was chosen, or an unknown element.
fn unknown_or_virtual(set: &ElementSet, name: &str, chain: &[String]) -> ElementError {
    let providers: Vec<String> = set
        .providers_of(name)
        .into_iter()
        .filter(|p| p != name)
        .collect();
    if let (false, Some(needer)) = (providers.is_empty(), chain.last()) {
        return ElementError::VirtualUnprovided {
            name: name.to_owned(),
            needed_by: needer.clone(),
            fix: if providers.len() == 1 {
                format!("{} provides it: add it", providers[0])
            } else {
                format!("{} provide it: add one", join_names(&providers))
            },
            chain: render_chain(&chain[..chain.len() - 1]),
        };
    }
    let hint = if providers.is_empty() {
        suggestion(set, name)
    } else {
        format!(
            "; it is a virtual name: name one of its providers instead ({})",
            join_names(&providers)
        )
    };
    ElementError::UnknownElement {
        name: name.to_owned(),
        chain: render_chain(chain),
        hint,
    }
}

/// "; did you mean x or y?" for names close to `name`, else a hint about the path.
fn suggestion(set: &ElementSet, name: &str) -> String {
    let limit = (name.len() / 3).max(2);
    let mut close: Vec<(usize, &String)> = set
        .elements
        .keys()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .collect();
    close.sort();
    let names: Vec<String> = close.into_iter().take(3).map(|(_, k)| k.clone()).collect();
    if names.is_empty() {
        "; check the name, and that ELEMENTS_PATH holds the directory that contains it".into()
    } else {
        format!(
            "; did you mean {}?",
            join_names(&names).replace(" and ", " or ")
        )
    }
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn check_operating_system(
    set: &ElementSet,
    providers: &BTreeMap<String, String>,
) -> Result<(), ElementError> {
    if providers.contains_key("operating-system") {
        return Ok(());
    }
    let candidates = set.providers_of("operating-system");
    Err(ElementError::NoOperatingSystem {
        candidates: if candidates.is_empty() {
            "(none found on ELEMENTS_PATH: add a directory with a distro element)".into()
        } else {
            candidates.join(", ")
        },
    })
}

/// The element a dependency edge points to: the element itself, or its provider.
fn dep_target<'a>(
    exp: &Expansion,
    providers: &'a BTreeMap<String, String>,
    dep: &'a str,
) -> Option<&'a str> {
    if exp.contains(dep) {
        Some(dep)
    } else {
        providers.get(dep).map(String::as_str)
    }
}

/// Element → the chosen elements it depends on (after mapping provided names).
fn dependency_edges(
    set: &ElementSet,
    exp: &Expansion,
    providers: &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in &exp.chosen {
        let entry = edges.entry(name.clone()).or_default();
        for dep in set.get(name).map(|e| e.deps.as_slice()).unwrap_or(&[]) {
            if let Some(target) = dep_target(exp, providers, dep).filter(|t| *t != name) {
                entry.insert(target.to_owned());
            }
        }
    }
    edges
}

/// Each element's rank: the position of the first initial element it is reachable from.
fn ranks(
    initial: &[String],
    edges: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, usize> {
    let mut rank = BTreeMap::new();
    for (i, root) in initial.iter().enumerate() {
        let mut stack = vec![root.clone()];
        while let Some(n) = stack.pop() {
            if rank.contains_key(&n) {
                continue;
            }
            rank.insert(n.clone(), i);
            stack.extend(edges.get(&n).into_iter().flatten().cloned());
        }
    }
    rank
}

/// Kahn's algorithm with a priority queue keyed on (rank, name).
fn topological_order(
    set: &ElementSet,
    exp: &Expansion,
    initial: &[String],
    providers: &BTreeMap<String, String>,
) -> Result<Vec<String>, ElementError> {
    let edges = dependency_edges(set, exp, providers);
    let rank = ranks(initial, &edges);
    let mut waiting: BTreeMap<&str, usize> = edges
        .iter()
        .map(|(n, deps)| (n.as_str(), deps.len()))
        .collect();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (n, deps) in &edges {
        for d in deps {
            dependents.entry(d.as_str()).or_default().push(n.as_str());
        }
    }
    let key = |n: &str| Reverse((rank.get(n).copied().unwrap_or(usize::MAX), n.to_owned()));
    let mut ready: BinaryHeap<_> = waiting
        .iter()
        .filter(|(_, c)| **c == 0)
        .map(|(n, _)| key(n))
        .collect();
    let mut order = Vec::with_capacity(edges.len());
    while let Some(Reverse((_, name))) = ready.pop() {
        for dependent in dependents.get(name.as_str()).into_iter().flatten() {
            if let Some(count) = waiting.get_mut(dependent) {
                *count -= 1;
                if *count == 0 {
                    ready.push(key(dependent));
                }
            }
        }
        order.push(name);
    }
    if order.len() < edges.len() {
        let placed: BTreeSet<&String> = order.iter().collect();
        return Err(ElementError::Cycle {
            cycle: find_cycle(&edges, &placed),
        });
    }
    Ok(order)
}

/// Names one cycle among the unplaced elements, as "a -> b -> a". Every unplaced
/// element has an unplaced dependency, so following those edges must loop.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>, placed: &BTreeSet<&String>) -> String {
    let remaining: Vec<&String> = edges.keys().filter(|k| !placed.contains(k)).collect();
    let Some(start) = remaining.first() else {
        return String::new();
    };
    let mut path: Vec<&String> = vec![start];
    loop {
        let cur = path[path.len() - 1];
        let next = edges
            .get(cur)
            .and_then(|deps| deps.iter().find(|d| !placed.contains(d)));
        let Some(next) = next else {
            break;
        };
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(next.clone());
            return cycle.join(" -> ");
        }
        path.push(next);
    }
    path.iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// The block-device layout files DIB would consider for `arch`, per element in
/// order: the arch-specific file if present, else `block-device-default.yaml`.
pub fn block_device_layouts(
    set: &ElementSet,
    order: &[String],
    arch: &str,
) -> Vec<(String, PathBuf)> {
    // DIB treats ppc64le and ppc64el as the same architecture.
    let arch = if arch == "ppc64le" { "ppc64el" } else { arch };
    let mut out = Vec::new();
    for name in order {
        let Some(element) = set.get(name) else {
            continue;
        };
        let specific = element.path.join(format!("block-device-{arch}.yaml"));
        let default = element.path.join("block-device-default.yaml");
        if let Some(file) = [specific, default].into_iter().find(|f| f.is_file()) {
            out.push((name.clone(), file));
        }
    }
    out
}

/// DIB silently takes the first layout it meets; two candidates are an error here.
fn check_block_device_layouts(
    set: &ElementSet,
    order: &[String],
    arch: &str,
) -> Result<(), ElementError> {
    match block_device_layouts(set, order, arch).as_slice() {
        [(first, first_file), (second, second_file), ..] => {
            Err(ElementError::BlockDeviceConflict {
                first: first.clone(),
                second: second.clone(),
                first_file: first_file.clone(),
                second_file: second_file.clone(),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::discovery::Element;

    /// Builds an element set from (name, deps, provides) triples.
    fn set(specs: &[(&str, &[&str], &[&str])]) -> ElementSet {
        let mut s = ElementSet::default();
        for (name, deps, provides) in specs {
            s.elements.insert(
                name.to_string(),
                Element {
                    name: name.to_string(),
                    path: PathBuf::from(format!("/nonexistent/{name}")),
                    deps: deps.iter().map(|d| d.to_string()).collect(),
                    provides: provides.iter().map(|d| d.to_string()).collect(),
                },
            );
        }
        s
    }

    fn os_and_base() -> Vec<(
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    )> {
        vec![
            ("base", &[], &[]),
            ("debian-minimal", &["debootstrap"], &["operating-system"]),
            ("debootstrap", &[], &[]),
            ("ubuntu-minimal", &[], &["operating-system"]),
            ("vm", &["block-device"], &[]),
            ("block-device-mbr", &[], &["block-device"]),
            ("block-device-gpt", &[], &["block-device"]),
            ("block-device-efi", &[], &["block-device"]),
        ]
    }

    fn with(
        extra: &[(
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
        )],
    ) -> ElementSet {
        let mut specs = os_and_base();
        specs.extend_from_slice(extra);
        set(&specs)
    }

    fn run(s: &ElementSet, user: &[&str]) -> Result<Vec<String>, ElementError> {
        let user: Vec<String> = user.iter().map(|u| u.to_string()).collect();
        resolve(
            s,
            &Request {
                user: &user,
                no_base: false,
                arch: "amd64",
                block_device_config_set: false,
            },
        )
    }

    #[test]
    fn deps_come_first_and_ties_follow_user_order() {
        let s = with(&[
            ("zz", &["shared"], &[]),
            ("aa", &["shared"], &[]),
            ("shared", &[], &[]),
        ]);
        let order = run(&s, &["zz", "debian-minimal", "aa"]).unwrap();
        assert_eq!(
            order,
            [
                "shared",
                "zz",
                "debootstrap",
                "debian-minimal",
                "aa",
                "base"
            ]
        );
    }

    #[test]
    fn ordering_is_deterministic_by_name_within_a_rank() {
        let s = with(&[
            ("top", &["c", "a", "b"], &[]),
            ("a", &[], &[]),
            ("b", &[], &[]),
            ("c", &[], &[]),
        ]);
        let order = run(&s, &["top", "debian-minimal"]).unwrap();
        assert_eq!(
            order,
            [
                "a",
                "b",
                "c",
                "top",
                "debootstrap",
                "debian-minimal",
                "base"
            ]
        );
    }

    #[test]
    fn vm_adds_mbr_and_provider_comes_before_vm() {
        let s = with(&[]);
        let order = run(&s, &["vm", "debian-minimal"]).unwrap();
        assert_eq!(
            order,
            [
                "block-device-mbr",
                "vm",
                "debootstrap",
                "debian-minimal",
                "base"
            ]
        );
        let user = vec!["vm".to_string(), "ubuntu-minimal".to_string()];
        let arm = resolve(
            &s,
            &Request {
                user: &user,
                no_base: true,
                arch: "arm64",
                block_device_config_set: false,
            },
        )
        .unwrap();
        assert_eq!(arm, ["block-device-efi", "vm", "ubuntu-minimal"]);
    }

    /// element-info's expansion adds neither base nor vm's default layout.
    #[test]
    fn expand_dependencies_adds_nothing() {
        let s = with(&[]);
        let names = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let order = expand_dependencies(&s, &names(&["debian-minimal", "debian-minimal"])).unwrap();
        assert_eq!(order, ["debootstrap", "debian-minimal"]);
        let err = expand_dependencies(&s, &names(&["vm", "debian-minimal"])).unwrap_err();
        assert!(err.to_string().contains("vm needs block-device"), "{err}");
    }

    #[test]
    fn explicit_block_device_is_kept() {
        let order = run(&with(&[]), &["vm", "block-device-gpt", "ubuntu-minimal"]).unwrap();
        assert!(order.contains(&"block-device-gpt".to_string()));
        assert!(!order.contains(&"block-device-mbr".to_string()));
    }

    #[test]
    fn virtual_name_without_provider_explains_the_choice() {
        let s = with(&[("my-image", &["vm"], &[])]);
        let err = run(&s, &["my-image", "ubuntu-minimal"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "vm needs block-device; block-device-efi, block-device-gpt and block-device-mbr \
             provide it: add one (needed by my-image)"
        );
    }

    #[test]
    fn unknown_element_suggests_close_names() {
        let err = run(&with(&[]), &["debian-minimall"])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("unknown element debian-minimall"), "{err}");
        assert!(err.contains("did you mean debian-minimal"), "{err}");
        let s = with(&[("a", &["zzzzzz-nothing"], &[])]);
        let err = run(&s, &["a", "ubuntu-minimal"]).unwrap_err().to_string();
        assert!(err.contains("zzzzzz-nothing (needed by a)"), "{err}");
        assert!(err.contains("ELEMENTS_PATH"), "{err}");
    }

    #[test]
    fn cycle_is_named_in_full() {
        let s = with(&[("a", &["b"], &[]), ("b", &["c"], &[]), ("c", &["a"], &[])]);
        let err = run(&s, &["a", "ubuntu-minimal"]).unwrap_err().to_string();
        assert!(
            err.starts_with("dependency cycle: a -> b -> c -> a"),
            "{err}"
        );
        let s = with(&[("a", &["b"], &[]), ("b", &["a"], &[])]);
        let err = run(&s, &["a", "ubuntu-minimal"]).unwrap_err().to_string();
        assert!(err.contains("a -> b -> a"), "{err}");
    }

    #[test]
    fn self_dependency_is_ignored() {
        let s = with(&[("a", &["a"], &[])]);
        assert_eq!(
            run(&s, &["a", "ubuntu-minimal"]).unwrap(),
            ["a", "ubuntu-minimal", "base"]
        );
    }

    #[test]
    fn two_providers_are_an_error() {
        let err = run(&with(&[]), &["debian-minimal", "ubuntu-minimal"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "operating-system is provided by both debian-minimal and ubuntu-minimal"
            ),
            "{err}"
        );
    }

    #[test]
    fn user_element_provided_by_another_is_an_error() {
        let s = with(&[("fancy-mbr", &[], &["block-device-mbr"])]);
        let err = run(&s, &["block-device-mbr", "fancy-mbr", "ubuntu-minimal"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "block-device-mbr was named on the command line, but fancy-mbr provides it"
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_operating_system_lists_candidates() {
        let err = run(&with(&[]), &["vm", "block-device-gpt"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no element provides operating-system; add one of: debian-minimal, ubuntu-minimal"
        );
    }

    #[test]
    fn provided_dependency_is_not_pulled_in() {
        // "dhcp" is a real element, but "fancy-net" provides it.
        let s = with(&[
            ("app", &["dhcp", "fancy-net"], &[]),
            ("dhcp", &["dhcp-extra"], &[]),
            ("dhcp-extra", &[], &[]),
            ("fancy-net", &[], &["dhcp"]),
        ]);
        let order = run(&s, &["app", "ubuntu-minimal"]).unwrap();
        assert_eq!(order, ["fancy-net", "app", "ubuntu-minimal", "base"]);
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }
}
