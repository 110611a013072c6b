//! The power button: which input devices can send `KEY_POWER`, and reading their events.

use std::path::Path;

pub const EV_KEY: u16 = 1;
pub const KEY_POWER: u16 = 116;

/// Whether a sysfs key capability bitmap (`capabilities/key`: hex words, most significant
/// first, each as wide as a C `long`) has bit `code` set.
pub fn has_key(bitmap: &str, code: u16) -> bool {
    let bits = usize::BITS as usize;
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let index = code as usize / bits;
    let Some(word) = words.len().checked_sub(index + 1).map(|i| words[i]) else {
        return false;
    };
    usize::from_str_radix(word, 16).is_ok_and(|w| w & (1 << (code as usize % bits)) != 0)
}

/// Whether the input event device `eventN` under `<sys>/class/input` has a power key.
pub fn is_power_button(sys: &Path, event_name: &str) -> bool {
    let caps = sys
        .join("class/input")
        .join(event_name)
        .join("device/capabilities/key");
    std::fs::read_to_string(caps).is_ok_and(|bitmap| has_key(&bitmap, KEY_POWER))
}

/// A `struct input_event` on x86_64: 16 bytes of time, then type, code and value.
pub const EVENT_SIZE: usize = 24;

/// Whether a buffer of input events holds a power-key press.
pub fn power_pressed(buf: &[u8]) -> bool {
    buf.chunks_exact(EVENT_SIZE).any(|ev| {
        let ty = u16::from_ne_bytes([ev[16], ev[17]]);
        let code = u16::from_ne_bytes([ev[18], ev[19]]);
        let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
        ty == EV_KEY && code == KEY_POWER && value == 1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_capability_bitmaps() {
        // The ACPI power button: only KEY_POWER (bit 116 = word 1, bit 52).
        assert!(has_key("10000000000000 0", KEY_POWER));
        // An AT keyboard: many words, KEY_POWER included.
        assert!(has_key(
            "402000000 3803078f800d001 feffffdfffefffff fffffffffffffffe",
            KEY_POWER
        ));
        assert!(!has_key("0", KEY_POWER));
        assert!(!has_key("", KEY_POWER));
        assert!(!has_key("zz 0", KEY_POWER));
        assert!(has_key("1", 0));
    }

    fn event(ty: u16, code: u16, value: i32) -> Vec<u8> {
        let mut ev = vec![0u8; 16];
        ev.extend_from_slice(&ty.to_ne_bytes());
        ev.extend_from_slice(&code.to_ne_bytes());
        ev.extend_from_slice(&value.to_ne_bytes());
        ev
    }

    #[test]
    fn detects_a_press_not_a_release() {
        let mut buf = event(EV_KEY, KEY_POWER, 0);
        assert!(!power_pressed(&buf));
        buf.extend(event(0, 0, 0));
        buf.extend(event(EV_KEY, KEY_POWER, 1));
        assert!(power_pressed(&buf));
        assert!(!power_pressed(&event(EV_KEY, 30, 1)));
    }

    #[test]
    fn finds_power_buttons_in_sysfs() {
        let root = tempfile::tempdir().unwrap();
        let caps = root.path().join("class/input/event0/device/capabilities");
        std::fs::create_dir_all(&caps).unwrap();
        std::fs::write(caps.join("key"), "10000000000000 0\n").unwrap();
        assert!(is_power_button(root.path(), "event0"));
        assert!(!is_power_button(root.path(), "event1"));
    }
}
