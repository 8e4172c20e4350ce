//! The actors: a supervisor that owns the queue, one download actor per running
//! download, a sampler that turns progress into frames, and the broadcaster that
//! numbers the frames and hands them to every reader.

pub mod again;
pub mod broadcaster;
pub mod download;
pub mod frames;
pub mod handle;
pub mod queue_error;
pub mod sampler;
pub mod supervisor;
