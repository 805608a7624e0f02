//! `warmpool render`: the objects the reconciler would apply for a configuration, offline. It
//! takes what the reconciler would observe with no cluster (`reconcile::watches::pods::offline`: no
//! tenant, `--image` as discovered images) and calls the very builders the reconciler applies
//! (`reconcile::desired`). This file only reads, prints and words the messages.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use serde_json::json;

use crate::config::{Config, Slot, SpareSlots};
use crate::core::pool::{desired, images};
use crate::kubectl::yaml;
use crate::reconcile::watches::pods;

/// Print the PriorityClass, prewarmer Deployment and image-cache DaemonSet the reconciler would
/// apply (no cluster needed).
///
/// The objects are built by the reconciler's own functions from the configuration, as if no
/// tenant had been seen yet: `--image` adds images as tenant pods running them would
/// (`imageCache.discover`), `prewarmer.slot: auto` starts from the default slot (640m, 2150Mi).
/// In a cluster the reconciler also adds an owner reference to warmpool's own Deployment.
/// The prewarmer keeps the spare slots in force at `--at` (now without it): with a
/// `prewarmer.schedule`, the window in force is named in its annotation
/// `warmpool.io/schedule-window` (`none` outside every window).
///
/// Examples:
///   warmpool render
///   warmpool render --config config.yaml --at 2026-11-30T08:50:00+01:00
///   warmpool render --config config.yaml --image ghcr.io/acme/web:1.4 -o json
///   warmpool render --namespace warmpool | kubectl apply --dry-run=server -f -
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The configuration file (YAML); built-in CargoCATs defaults without it.
    #[arg(long, env = "WARMPOOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// An image that tenant pods run, as discovery would find it (repeatable).
    #[arg(long = "image", value_name = "REF")]
    pub images: Vec<String>,
    /// warmpool's own namespace, where the prewarmer and the image cache live.
    #[arg(long, default_value = "warmpool-system")]
    pub namespace: String,
    /// The instant whose spare slots the prewarmer shows (RFC 3339, e.g.
    /// 2026-11-30T08:50:00+01:00 or 2026-11-30T07:50:00Z); now without it.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// yaml: the three documents, `---` between them; json: a `kind: List` of them.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Yaml,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())
        .map_err(|e| anyhow!("{e}; fix the file given by --config"))?;
    if !is_dns_label(&args.namespace) {
        bail!(
            "--namespace `{}` is not a namespace name (lower-case letters, digits and `-`, at most 63)",
            args.namespace
        );
    }
    if let Some(bad) = args
        .images
        .iter()
        .find(|i| i.trim().is_empty() || i.contains(char::is_whitespace))
    {
        bail!("--image `{bad}` is not an image reference");
    }
    if let Some((bad, reason)) = args
        .images
        .iter()
        .find_map(|i| images::normalize(i).err().map(|reason| (i, reason)))
    {
        bail!("--image `{bad}` is not an image reference: {reason}");
    }
    let at = match &args.at {
        None => jiff::Timestamp::now(),
        Some(text) => parse_at(text)?,
    };
    let spare = config.prewarmer.in_force(at);
    let observed = pods::offline(&config, &args.images);
    for line in notes(&config, &args.images, &observed.images) {
        eprintln!("{line}");
    }
    if let Some(line) = schedule_note(&config, at, &spare) {
        eprintln!("{line}");
    }

    let ns = args.namespace.as_str();
    let (cache, discovered) = desired::cache_sets(&config, &observed.images, &observed.left_out);
    let mut objects = vec![
        serde_json::to_value(desired::priority_class())?,
        serde_json::to_value(desired::prewarmer(
            &config,
            ns,
            &observed.slot,
            &spare,
            None,
        ))?,
        serde_json::to_value(desired::image_cache(&config, ns, &cache, None))?,
    ];
    if let Some(discovered) = &discovered {
        objects.push(serde_json::to_value(desired::image_cache(
            &config, ns, discovered, None,
        ))?);
    }
    let text = match args.output {
        Output::Yaml => yaml::to_yaml_stream(objects.iter())?,
        Output::Json => {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": objects.to_vec()});
            serde_json::to_string_pretty(&list)? + "\n"
        }
    };
    print!("{text}");
    Ok(())
}

/// What the output does not show by itself, one line each (on standard error).
fn notes(config: &Config, given: &[String], cached: &[String]) -> Vec<String> {
    let mut notes = Vec::new();
    if !given.is_empty() && !config.image_cache.discover {
        notes.push(
            "imageCache.discover is false: the reconciler caches no image that tenant pods run, \
             so the --image images are left out"
                .to_owned(),
        );
    } else {
        let left_out = given
            .iter()
            .map(|i| images::canonical(i))
            .filter(|i| !cached.contains(i))
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if left_out > 0 {
            notes.push(format!(
                "{left_out} --image image(s) left out: imageCache.maxImages is {}",
                config.image_cache.max_images
            ));
        }
    }
    if let SpareSlots::Auto { auto } = &config.prewarmer.spare_slots {
        notes.push(format!(
            "prewarmer.spareSlots is auto: shown is its min ({}), as with no arrival recorded; \
             the reconciler sizes it from the tenants that arrived within {} over the last {} \
             (ConfigMap warmpool-arrivals), up to {}",
            auto.min, auto.span, auto.lookback, auto.max
        ));
    }
    if let Some(down) = &config.prewarmer.scale_down {
        notes.push(format!(
            "prewarmer.scaleDown is set: shown is the target; when it drops, the reconciler \
             removes {} placeholder(s) every {}, none while tenants are arriving",
            down.step, down.every
        ));
    }
    if matches!(config.prewarmer.slot, Slot::Auto) {
        notes.push(
            "prewarmer.slot is auto: shown is the default slot (640m, 2150Mi), which the \
             reconciler uses until it sees tenant pods"
                .to_owned(),
        );
    }
    notes
}

/// `--at`: an RFC 3339 instant (an offset or `Z` is required: a local time alone is ambiguous).
fn parse_at(text: &str) -> anyhow::Result<jiff::Timestamp> {
    text.trim().parse::<jiff::Timestamp>().map_err(|_| {
        anyhow!(
            "--at `{text}` is not an RFC 3339 time: write it like 2026-11-30T08:50:00+01:00 or \
             2026-11-30T07:50:00Z"
        )
    })
}

/// With a schedule: what is in force at `at` and when that changes (on standard error).
fn schedule_note(
    config: &Config,
    at: jiff::Timestamp,
    spare: &crate::core::spare::windows::InForce,
) -> Option<String> {
    if config.prewarmer.schedule.is_empty() {
        return None;
    }
    let why = match &spare.window {
        Some(w) => format!("window `{w}` in force"),
        None => "no window in force (prewarmer.spareSlots)".to_owned(),
    };
    let next = match spare.next_change {
        Some(t) => format!("; next change at {t}"),
        None => String::new(),
    };
    Some(format!(
        "prewarmer.schedule at {at}: {} spare slots, {why}{next}",
        spare.slots
    ))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_say_what_the_output_leaves_out() {
        let config = Config::from_yaml("imageCache: {discover: false}").unwrap();
        let got = notes(&config, &["a:1".into()], &[]);
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("discover is false"), "{got:?}");
        let config =
            Config::from_yaml("imageCache: {maxImages: 1, images: []}\nprewarmer: {slot: auto}")
                .unwrap();
        // The cache holds canonical references: `a:1` is there as docker.io/library/a:1.
        let got = notes(
            &config,
            &["a:1".into(), "b:1".into()],
            &["docker.io/library/a:1".into()],
        );
        assert!(got[0].starts_with("1 --image image(s) left out"), "{got:?}");
        assert!(got[1].contains("slot is auto"), "{got:?}");
        let config = Config::from_yaml("imageCache: {maxImages: 1, images: []}").unwrap();
        let got = notes(
            &config,
            &["nginx".into(), "docker.io/library/nginx:latest".into()],
            &["docker.io/library/nginx:latest".into()],
        );
        assert!(got.is_empty(), "one image in two spellings: {got:?}");
        assert!(notes(&Config::default(), &[], &[]).is_empty());
        let config = Config::from_yaml("prewarmer: {spareSlots: {auto: {min: 2}}}").unwrap();
        let got = notes(&config, &[], &[]);
        assert!(
            got[0].starts_with("prewarmer.spareSlots is auto: shown is its min (2)"),
            "{got:?}"
        );
    }

    #[test]
    fn at_is_rfc_3339_and_the_schedule_note_says_what_is_in_force() {
        assert_eq!(
            parse_at("2026-11-30T08:50:00+01:00").unwrap(),
            parse_at("2026-11-30T07:50:00Z").unwrap()
        );
        for bad in ["tomorrow", "2026-11-30", "2026-11-30T08:50:00", ""] {
            let e = parse_at(bad).unwrap_err().to_string();
            assert!(e.starts_with("--at `") && !e.contains('\n'), "{e}");
        }
        let config = Config::from_yaml(
            "prewarmer: {schedule: [{name: w, cron: '0 9 * * *', duration: 1h, spareSlots: 4}]}",
        )
        .unwrap();
        let at = parse_at("2026-11-30T09:30:00Z").unwrap();
        assert_eq!(
            schedule_note(&config, at, &config.prewarmer.in_force(at)).as_deref(),
            Some(
                "prewarmer.schedule at 2026-11-30T09:30:00Z: 4 spare slots, window `w` in force; \
                 next change at 2026-11-30T10:00:00Z"
            )
        );
        let d = Config::default();
        assert_eq!(schedule_note(&d, at, &d.prewarmer.in_force(at)), None);
    }

    #[test]
    fn namespaces_are_dns_labels() {
        assert!(is_dns_label("warmpool-system"));
        for bad in ["", "-a", "a-", "Warmpool", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
