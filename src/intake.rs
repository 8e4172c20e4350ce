//! Intake: every door's request turned into a `NewDownload` of the queue, with the
//! reasons a request is refused. No door builds a download by itself.

pub mod hub;
