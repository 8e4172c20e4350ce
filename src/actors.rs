//! The actors: a supervisor that owns the queue, one download actor per running
//! download, and a broadcaster that turns progress into websocket frames.

pub mod broadcaster;
pub mod download;
pub mod frames;
pub mod handle;
pub mod queue_error;
pub mod supervisor;
