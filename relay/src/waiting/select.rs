//! Picks the one waiting build a command is about, by id, id prefix or
//! derivation name.

use super::discovery::{Discovery, WaitingBuild};

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("no build is waiting{}", denied_hint(*.denied))]
    NoneWaiting { denied: usize },
    #[error("no waiting build matches `{query}`{}", denied_hint(*.denied))]
    NotFound { query: String, denied: usize },
    #[error("{} waiting builds match{}: {}; name one by its id", .ids.len(), query.as_ref().map(|q| format!(" `{q}`")).unwrap_or_default(), .ids.join(", "))]
    Ambiguous { query: Option<String>, ids: Vec<String> },
}

fn denied_hint(denied: usize) -> String {
    if denied == 0 {
        String::new()
    } else {
        format!(
            " that this user can reach; permission denied for {denied} build director{}: daemon builds need root (run it with \
             sudo, or have root start the broker, `nix-attach broker`, to enter your own builds without it)",
            if denied == 1 { "y" } else { "ies" }
        )
    }
}

/// Returns the build that `query` names, or the only one when it is `None`.
pub fn select(discovery: Discovery, query: Option<&str>) -> Result<WaitingBuild, SelectError> {
    let denied = discovery.denied.len();
    let mut builds = discovery.builds;
    if let Some(query) = query {
        // An exact id wins, but only if no other build claims the same id.
        let exact = builds.iter().filter(|build| build.meta.id == query).count();
        if exact == 1 {
            builds.retain(|build| build.meta.id == query);
        } else {
            builds.retain(|build| build.meta.id.starts_with(query) || build.meta.drv == query);
        }
    }
    match builds.len() {
        1 => Ok(builds.remove(0)),
        0 => Err(match query {
            Some(query) => SelectError::NotFound { query: crate::sanitize::sanitize(query), denied },
            None => SelectError::NoneWaiting { denied },
        }),
        _ => Err(SelectError::Ambiguous {
            query: query.map(crate::sanitize::sanitize),
            ids: builds.iter().map(|b| format!("{} ({})", b.meta.id, crate::sanitize::sanitize(&b.meta.drv))).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::tests::sample;

    fn waiting(ids_and_names: &[(&str, &str)], denied: usize) -> Discovery {
        let builds = ids_and_names
            .iter()
            .map(|(id, drv)| WaitingBuild::stand_in(crate::metadata::Metadata { id: id.to_string(), drv: drv.to_string(), ..sample() }))
            .collect();
        Discovery { builds, denied: vec!["/tmp/nix-build-x".into(); denied], skipped: Vec::new() }
    }

    fn chosen(discovery: Discovery, query: Option<&str>) -> String {
        select(discovery, query).unwrap().meta.id
    }

    #[test]
    fn the_only_waiting_build_needs_no_id() {
        assert_eq!(chosen(waiting(&[("aaaa", "hello")], 0), None), "aaaa");
    }

    #[test]
    fn a_build_is_named_by_id_prefix_or_derivation_name() {
        let two = || waiting(&[("aaaa", "hello"), ("abcd", "world")], 0);
        assert_eq!(chosen(two(), Some("ab")), "abcd");
        assert_eq!(chosen(two(), Some("world")), "abcd");
        assert_eq!(chosen(two(), Some("aaaa")), "aaaa");
    }

    #[test]
    fn an_exact_id_wins_over_prefixes() {
        assert_eq!(chosen(waiting(&[("ab", "x"), ("abcd", "y")], 0), Some("ab")), "ab");
    }

    #[test]
    fn two_builds_claiming_one_id_are_ambiguous() {
        let err = select(waiting(&[("abcd", "real"), ("abcd", "impostor")], 0), Some("abcd")).unwrap_err();
        assert!(matches!(err, SelectError::Ambiguous { .. }));
    }

    #[test]
    fn several_matches_are_listed() {
        let err = select(waiting(&[("aaaa", "hello"), ("aabb", "hello")], 0), Some("hello")).unwrap_err();
        assert_eq!(err.to_string(), "2 waiting builds match `hello`: aaaa (hello), aabb (hello); name one by its id");
    }

    #[test]
    fn with_nothing_reachable_the_error_says_that_root_is_needed() {
        let err = select(waiting(&[], 2), None).unwrap_err();
        assert!(err.to_string().starts_with("no build is waiting that this user can reach; permission denied for 2"));
        assert_eq!(select(waiting(&[], 0), None).unwrap_err().to_string(), "no build is waiting");
    }
}
