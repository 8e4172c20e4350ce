//! The actors: a supervisor that owns the queue, one download actor per running
//! download, and a broadcaster that turns progress into websocket frames.

pub mod broadcaster;
pub mod download;
pub mod supervisor;
