//! The transports: thin adapters from a byte stream or HTTP to
//! [`crate::tools::MnemoServer`]. Only `stdio` writes to stdout.

pub mod http;
pub mod stdio;
