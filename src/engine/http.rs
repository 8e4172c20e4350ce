//! The HTTP protocol of the engine: the request of an attempt or a connection
//! (`request`), the one judge of every answer (`classify`), the validators a resume is
//! made under (`validators`), `Content-Range` (`range`), and the retry policy (`retry`).
//! It never touches the `.part`: what a body delivers goes through [`super::part`].

pub(in crate::engine) mod classify;
pub(in crate::engine) mod range;
pub(in crate::engine) mod request;
pub(in crate::engine) mod retry;
pub(in crate::engine) mod validators;
