//! The doors: every way in from outside. REST (`api`), the websocket (`ws`), aria2
//! JSON-RPC (`aria2`), the LAN mirror (`mirror`) and the terminal (`cli`) each turn
//! their protocol into calls on the queue's handle; `web` is the HTTP server that
//! routes to them, `security` its guard, `conn` a handler's access to its socket.

pub mod api;
pub mod aria2;
pub mod cli;
pub mod conn;
pub mod error;
pub mod mirror;
pub mod security;
pub mod web;
pub mod ws;
