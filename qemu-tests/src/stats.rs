//! Small pure helpers for benchmarks and reports: medians and stable event labels.

use shoal_boot_events::Event;

/// The median of `values` (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// A label that tells apart events that occur once per stage or once per task:
/// `init.start (initramfs)`, `coldplug.done (root)`, `task.started (/etc/shoal/boot.d/10-x)`.
pub fn event_label(event: &Event) -> String {
    let stage = |s: &shoal_boot_events::Stage| match s {
        shoal_boot_events::Stage::Initramfs => "initramfs",
        shoal_boot_events::Stage::Root => "root",
    };
    match event {
        Event::InitStart { stage: s, .. }
        | Event::MountsReady { stage: s }
        | Event::Coldplug { stage: s, .. } => {
            format!("{} ({})", event.name(), stage(s))
        }
        Event::TaskStarted { path, .. } => format!("{} ({path})", event.name()),
        _ => event.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_boot_events::Stage;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn labels_tell_stages_apart() {
        let start = Event::InitStart {
            stage: Stage::Root,
            version: "0.1".into(),
        };
        assert_eq!(event_label(&start), "init.start (root)");
        assert_eq!(event_label(&Event::BootComplete), "boot.complete");
        let task = Event::TaskStarted {
            path: "/etc/shoal/boot.d/x".into(),
            pid: 7,
        };
        assert_eq!(event_label(&task), "task.started (/etc/shoal/boot.d/x)");
    }
}
