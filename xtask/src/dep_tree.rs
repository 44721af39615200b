//! One dependency tree for `cargo xtask` and `cargo test --workspace`.
//!
//! Cargo turns on a dependency's features from the packages one command
//! builds. `cargo xtask` builds xtask alone; the tests build every package
//! with its dev-dependencies. When the two disagree on a shared crate's
//! features, that crate and everything above it is compiled twice (in a CI
//! run: xtask, then the tests rebuilt libc, rustix, ring, rustls, ureq and
//! more, about 250 s). xtask/Cargo.toml names the features the rest of the
//! workspace turns on; the test here fails when they drift apart again.

use std::collections::{BTreeMap, BTreeSet};

/// Feature lists of each crate (`name version`) in `cargo tree --prefix none
/// -f '{p} [{f}]'` output. A crate can show several lists: the build-script
/// and proc-macro side of the tree is resolved apart from the rest.
pub fn feature_sets(tree: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in tree.lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let (Some(open), Some(close)) = (line.rfind('['), line.rfind(']')) else {
            continue;
        };
        if close < open {
            continue;
        }
        out.entry(format!("{name} {version}"))
            .or_default()
            .insert(line[open + 1..close].to_string());
    }
    out
}

fn features(list: &str) -> BTreeSet<&str> {
    list.split(',').filter(|f| !f.is_empty()).collect()
}

/// Crates of xtask's tree that the workspace build compiles with more
/// features: each a line saying which to add to xtask/Cargo.toml. A list the
/// workspace has that is a subset of one of xtask's is the other side of the
/// tree (build scripts, proc macros), not a second copy of xtask's.
pub fn drift(
    xtask: &BTreeMap<String, BTreeSet<String>>,
    workspace: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (krate, lists) in xtask {
        let Some(ws) = workspace.get(krate) else {
            continue;
        };
        for w in ws.difference(lists) {
            let wf = features(w);
            if lists.iter().any(|x| wf.is_subset(&features(x))) {
                continue;
            }
            let extra: Vec<&str> = lists
                .iter()
                .map(|x| features(x))
                .max_by_key(|x| x.intersection(&wf).count())
                .map(|x| wf.difference(&x).copied().collect())
                .unwrap_or_default();
            out.push(format!(
                "{krate}: the workspace turns on [{}] that xtask's build does not",
                extra.join(",")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::{Context, Result, ensure};
    use std::process::Command;

    fn sets(lines: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        feature_sets(&lines.join("\n"))
    }

    #[test]
    fn parses_cargo_tree_lines() {
        let s = sets(&[
            "libc v0.2.191 [default,std]",
            "libc v0.2.191 [default,extra_traits,std]",
            "host-config v0.1.0 (/w/lib/host-config) [fetch,tls]",
            "serde_derive v1.0.229 (proc-macro) []",
            "",
        ]);
        assert_eq!(s.len(), 3);
        assert_eq!(s["libc v0.2.191"].len(), 2);
        assert!(s["host-config v0.1.0"].contains("fetch,tls"));
        assert!(s["serde_derive v1.0.229"].contains(""));
    }

    #[test]
    fn drift_is_only_more_features_on_the_workspace_side() {
        let cases: &[(&[&str], &[&str], usize)] = &[
            (&["a v1 [x,y]"], &["a v1 [x,y]"], 0),
            // The build-script side with fewer features: not a second copy.
            (&["a v1 [x,y]"], &["a v1 [x,y]", "a v1 []"], 0),
            (&["a v1 [x]"], &["a v1 [x,y]"], 1),
            (&["a v1 [x]"], &["a v1 [x]", "a v1 [x,z]"], 1),
            // Only in the workspace: not shared, nothing to align.
            (&["a v1 [x]"], &["a v1 [x]", "b v1 [q]"], 0),
        ];
        for (x, w, n) in cases {
            let d = drift(&sets(x), &sets(w));
            assert_eq!(d.len(), *n, "{x:?} vs {w:?}: {d:?}");
        }
        let d = drift(&sets(&["a v1 [x]"]), &sets(&["a v1 [x,y]"]));
        assert!(d[0].contains("[y]"), "{d:?}");
    }

    fn tree(args: &[&str]) -> Result<String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .args(["tree", "--prefix", "none", "-f", "{p} [{f}]"])
            .args(args)
            .current_dir(crate::root())
            .output()
            .with_context(|| format!("running {cargo} tree"))?;
        ensure!(
            out.status.success(),
            "cargo tree {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn xtask_and_the_workspace_tests_build_one_tree() -> Result<()> {
        let xtask = feature_sets(&tree(&["-p", "xtask", "-e", "normal,build"])?);
        let workspace = feature_sets(&tree(&["--workspace", "-e", "normal,build,dev"])?);
        ensure!(
            xtask.len() > 50,
            "cargo tree -p xtask listed {} crates",
            xtask.len()
        );
        let d = drift(&xtask, &workspace);
        ensure!(
            d.is_empty(),
            "add these features to the alignment list in xtask/Cargo.toml:\n{}",
            d.join("\n")
        );
        Ok(())
    }
}
