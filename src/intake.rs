//! Intake: every door's request turned into a `NewDownload` of the queue, with the
//! reasons a request is refused ([`IntakeError`]). No door builds a download by itself:
//! REST, the terminal, aria2, the LAN mirror and the library's update all come here,
//! and each maps an [`IntakeError`] to its own protocol's error.
//!
//! - [`url`]: a file at a URL ([`UrlFile`]), checked against the [`UrlPolicy`].
//! - [`hub`]: a file of the Hub ([`hub::Wanted`]), or every file of one quantization.

mod error;
pub mod hub;
pub mod url;

pub use error::IntakeError;
pub use url::{parse_sha256, UrlFile, UrlPolicy};
