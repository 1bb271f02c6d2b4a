//! The hook changes nothing about builds that pass, and builds without it
//! are not touched at all.

use crate::support::{list, Drv};

const PASSING_INSTALL: &str = r#"
mkdir -p $out
set +e
false
(exit 2)
set -e
if false; then :; fi
echo "built fine" > $out/result
echo "install done"
"#;

/// The build's own lines: not Nix's about what it builds or about its own
/// state (a busy database is a warning of Nix's, whichever build runs), nor
/// any that name the derivation.
fn own_lines(log: &str, name: &str) -> Vec<String> {
    let nix_says = ["these ", "this derivation", "waiting for lock", "building ", "warning: "];
    log.lines()
        .filter(|line| !nix_says.iter().any(|prefix| line.starts_with(prefix)))
        .filter(|line| !line.contains(name) && !line.contains("/nix/store/"))
        .map(String::from)
        .collect()
}

#[test]
fn a_passing_build_gives_the_same_output_with_the_hook() {
    let with = Drv::new("passing").phase("installPhase", PASSING_INSTALL);
    let without = Drv::new("passing").phase("installPhase", PASSING_INSTALL).without_hook();
    let (hooked, plain) = (with.build(), without.build());
    assert!(hooked.status.success() && plain.status.success(), "{}\n{}", hooked.log, plain.log);
    assert_eq!(own_lines(&hooked.log, &with.name), own_lines(&plain.log, &without.name));
    assert!(hooked.log.contains("install done"));
    assert!(!hooked.log.contains("nix-attach: "));
}

#[test]
fn a_failing_build_without_the_hook_fails_at_once() {
    let drv = Drv::new("unhooked").phase("buildPhase", "echo plain failure\nexit 3").without_hook();
    let finished = drv.build();
    assert!(!finished.status.success());
    assert!(finished.log.contains("failed with exit code 3"), "{}", finished.log);
    assert!(!finished.log.contains("nix-attach: "), "{}", finished.log);
    assert!(list().iter().all(|entry| entry["drv"] != drv.name.as_str()));
}
