//! Image references, read by the grammar of the distribution library (`reference/regexp.go`)
//! that Docker, containerd and the kubelet use, and put in the canonical form containerd
//! stores them under. Pure.
//!
//! Why not `oci-spec`'s `Reference`, a port of the same library: its pattern spells the tag
//! `[\w][\w.-]{0,127}` with Rust's *Unicode* `\w`, where Go's `\w` is ASCII. That bounded repeat
//! of a Unicode class compiles into an automaton that stays resident at about 7 MiB and needs
//! about 20 MiB while it is built (heaptrack, a reconciler with 3,000 tenants: a third of its
//! heap), and it accepts tags (`nginx:é`) that a registry and containerd refuse. Here the same
//! grammar is compiled with ASCII classes, as Go reads it; `oci-spec` stays as the oracle of the
//! tests, which assert that both read every ASCII string alike.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

/// The longest repository name (after the domain) the registry API takes.
const NAME_TOTAL_LENGTH_MAX: usize = 255;
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const OFFICIAL_REPOSITORIES: &str = "library";
const DEFAULT_TAG: &str = "latest";

/// A host name component: alphanumerics, with hyphens inside.
const DOMAIN_COMPONENT: &str = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
/// A path component: lower-case alphanumerics, joined by `.`, `_`, `__` or hyphens.
const PATH_COMPONENT: &str = "[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?";
const TAG: &str = r"[\w][\w.-]{0,127}";
const DIGEST: &str = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}";

/// `^(name)(?::(tag))?(?:@(digest))?$`, the name being an optional `domain[:port]/` and path
/// components joined by `/`.
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    let domain = format!("{DOMAIN_COMPONENT}(?:(?:\\.{DOMAIN_COMPONENT})+)?(?::[0-9]+)?");
    let name = format!("(?:{domain}/)?{PATH_COMPONENT}(?:(?:/{PATH_COMPONENT})+)?");
    let pattern = format!("^({name})(?::({TAG}))?(?:@({DIGEST}))?$");
    // ASCII classes, as Go's regexp reads `\w`; a constant pattern, compiled by every test.
    RegexBuilder::new(&pattern)
        .unicode(false)
        .build()
        .expect("the reference grammar compiles")
});

/// Why a string is not an image reference. The messages are those of the distribution library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("repository name must have at least one component")]
    NameEmpty,
    #[error("invalid reference format")]
    InvalidFormat,
    #[error("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")]
    NameTooLong,
    #[error("invalid checksum digest format")]
    DigestInvalidFormat,
    #[error("invalid checksum digest length")]
    DigestInvalidLength,
    #[error("unsupported digest algorithm")]
    DigestUnsupported,
}

/// `reference` in canonical form: `registry/repository[:tag][@digest]`, with `docker.io` and
/// `library/` filled in for Docker Hub and `:latest` when there is neither tag nor digest.
pub fn canonical(reference: &str) -> Result<String, ParseError> {
    if reference.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    let captures = REFERENCE
        .captures(reference)
        .ok_or(ParseError::InvalidFormat)?;
    let name = captures.get(1).map_or("", |m| m.as_str());
    let tag = captures.get(2).map(|m| m.as_str());
    let digest = captures.get(3).map(|m| m.as_str());
    let (domain, repository, library) = split_domain(name);
    let repository_len = repository.len()
        + if library {
            OFFICIAL_REPOSITORIES.len() + 1
        } else {
            0
        };
    if repository_len > NAME_TOTAL_LENGTH_MAX {
        return Err(ParseError::NameTooLong);
    }
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    let tag = match (tag, digest) {
        (None, None) => Some(DEFAULT_TAG),
        (tag, _) => tag,
    };
    let mut whole = String::with_capacity(reference.len() + 24);
    whole.push_str(domain);
    whole.push('/');
    if library {
        whole.push_str(OFFICIAL_REPOSITORIES);
        whole.push('/');
    }
    whole.push_str(repository);
    if let Some(tag) = tag {
        whole.push(':');
        whole.push_str(tag);
    }
    if let Some(digest) = digest {
        whole.push('@');
        whole.push_str(digest);
    }
    Ok(whole)
}

/// The registry and the repository of a name the grammar matched (distribution's
/// `splitDomain`): the first component is a registry when it has a `.` or a `:` or is
/// `localhost`; otherwise the name is on Docker Hub, where a one-component name is an official
/// image (`library/` to be prefixed: the third value).
fn split_domain(name: &str) -> (&str, &str, bool) {
    let (domain, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => (DOCKER_HUB, name),
    };
    let domain = if domain == DOCKER_HUB_LEGACY {
        DOCKER_HUB
    } else {
        domain
    };
    let library = domain == DOCKER_HUB && !repository.contains('/');
    (domain, repository, library)
}

/// A digest's hex part must be as long as its algorithm's hash.
fn check_digest(digest: &str) -> Result<(), ParseError> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or(ParseError::DigestInvalidFormat)?;
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ParseError::DigestUnsupported),
    };
    if hex.len() == want {
        Ok(())
    } else {
        Err(ParseError::DigestInvalidLength)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::distribution::Reference;
    use proptest::prelude::*;

    /// What `oci-spec` makes of `s`: the canonical form, or its error's message.
    fn oracle(s: &str) -> Result<String, String> {
        Reference::try_from(s)
            .map(|r| r.whole())
            .map_err(|e| e.to_string())
    }

    fn ours(s: &str) -> Result<String, String> {
        canonical(s).map_err(|e| e.to_string())
    }

    const DIGEST_256: &str =
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn reads_references_as_the_distribution_library_does() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("test.com:tag", "docker.io/library/test.com:tag"),
            ("test.com:5000/repo", "test.com:5000/repo:latest"),
            ("index.docker.io/nginx:1", "docker.io/library/nginx:1"),
            ("docker.io/bitnami/redis", "docker.io/bitnami/redis:latest"),
            ("localhost/app:dev", "localhost/app:dev"),
            (
                "localhost:5000/a/b/c:v1.2_3-x",
                "localhost:5000/a/b/c:v1.2_3-x",
            ),
            (
                "gcr.io/distroless/static:nonroot",
                "gcr.io/distroless/static:nonroot",
            ),
            (
                "my-reg.example.com/team/app__x",
                "my-reg.example.com/team/app__x:latest",
            ),
            (
                "Registry.Example.com/app",
                "Registry.Example.com/app:latest",
            ),
        ];
        for (given, want) in cases {
            assert_eq!(ours(given).as_deref(), Ok(want), "{given}");
            assert_eq!(oracle(given).as_deref(), Ok(want), "oracle: {given}");
        }
        let pinned = format!("quay.io/a/b:1@{DIGEST_256}");
        assert_eq!(ours(&pinned), Ok(pinned.clone()));
        assert_eq!(
            ours(&format!("nginx@{DIGEST_256}")),
            Ok(format!("docker.io/library/nginx@{DIGEST_256}"))
        );
    }

    #[test]
    fn says_why_a_string_is_not_a_reference() {
        assert_eq!(canonical(""), Err(ParseError::NameEmpty));
        for bad in [
            "Nginx", "nginx:", ":1", "a//b", "-a", "a/", "nginx:-x", "a b",
        ] {
            assert_eq!(canonical(bad), Err(ParseError::InvalidFormat), "{bad:?}");
        }
        let long = format!("r.io/{}", "a".repeat(256));
        assert_eq!(canonical(&long), Err(ParseError::NameTooLong));
        let short = "nginx@sha256:0123456789abcdef0123456789abcdef";
        assert_eq!(canonical(short), Err(ParseError::DigestInvalidLength));
        let md5 = "nginx@md5:0123456789abcdef0123456789abcdef";
        assert_eq!(canonical(md5), Err(ParseError::DigestUnsupported));
        let tag = format!("nginx:{}", "t".repeat(129));
        assert_eq!(canonical(&tag), Err(ParseError::InvalidFormat));
    }

    #[test]
    fn a_tag_is_ascii_as_in_go_where_oci_spec_takes_any_letter() {
        assert_eq!(canonical("nginx:é"), Err(ParseError::InvalidFormat));
        assert!(oracle("nginx:é").is_ok(), "oci-spec's Unicode \\w changed");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Strings over the grammar's own alphabet, where the edge cases are.
        #[test]
        fn ascii_strings_are_read_as_oci_spec_reads_them(
            s in "[a-cA-C0-9._:/@-]{0,24}(sha(256|384|512):[0-9a-f]{0,130})?",
        ) {
            prop_assert_eq!(ours(&s), oracle(&s));
        }

        #[test]
        fn plausible_references_are_read_as_oci_spec_reads_them(
            domain in "([a-z0-9-]{1,8}(\\.[a-z0-9-]{1,6}){0,2}(:[0-9]{1,5})?/)?",
            path in "[a-z0-9]{1,6}([._-]{1,2}[a-z0-9]{1,4}){0,2}(/[a-z0-9_.-]{1,8}){0,3}",
            tag in "(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,130})?",
            digest in "(@sha256:[0-9a-f]{62,66})?",
        ) {
            let s = format!("{domain}{path}{tag}{digest}");
            prop_assert_eq!(ours(&s), oracle(&s));
        }
    }
}
