//! Any bytes to `Message::decode`: it must not panic, and a message it accepts must come back
//! unchanged from encoding and decoding again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_netd::dhcp::packet::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        let encoded = message.encode();
        assert_eq!(
            Message::decode(&encoded).as_ref(),
            Ok(&message),
            "re-encoding changed the message; encoded as {encoded:02x?}"
        );
    }
});
