//! DHCPv4: the wire format (`packet`), leases (`lease`) and the client's state machine
//! (`client`).

pub mod client;
pub mod lease;
pub mod packet;
