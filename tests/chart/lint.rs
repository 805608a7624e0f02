//! helm lint --strict passes in every mode and flavour.

use crate::VARIANTS;
use support::chart::{helm, text};

#[test]
fn helm_lint_passes_in_every_mode_and_flavour() {
    let Some(helm) = helm() else { return };
    let chart = support::chart::chart_dir();
    for (name, args) in VARIANTS {
        let mut all = vec!["lint", "--strict", chart.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = support::chart::run(&helm, &all, &[], None);
        assert!(
            out.status.success(),
            "helm lint ({name}) failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("0 chart(s) failed"), "{name}");
    }
}
