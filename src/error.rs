//! The crate's error type.

/// Why a node API call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The viewer or upstream id is not (or no longer) known to the node.
    #[error("unknown connection id")]
    UnknownConnection,
    /// The instruction was refused; nothing changed.
    #[error("invalid instruction: {0}")]
    InvalidInstruction(String),
    /// No instructed channel has this name.
    #[error("unknown channel: {0}")]
    UnknownChannel(String),
    /// The configured maximum number of channels is reached.
    #[error("too many channels (maximum {0})")]
    TooManyChannels(usize),
    /// The call does not fit the connection's state (e.g. `upstream_connected` twice).
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
}
