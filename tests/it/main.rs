//! The integration tests, one binary: each module was a test binary of its own, and
//! each linked the whole crate. `common` holds what they share.

mod common;

mod architecture;
mod aria2;
mod aria2_clients;
mod aria2_vs_aria2c;
mod bad_requests;
mod bridge_overfetch;
mod browser;
mod core;
mod crash;
mod database;
mod engine_faults;
mod floods;
mod gguf_compat;
mod hub;
mod hub_emulator_selftest;
mod lease;
mod library;
mod library_completions;
mod library_property;
mod library_trust;
mod limits_and_scale;
mod llamacpp;
mod mirror;
mod mirror_hostile;
mod ollama_registry;
mod ops;
mod path_tricks;
mod pick;
mod process;
mod queue;
mod run_commands;
mod runtimes;
mod security;
mod segments;
mod slow_clients;
mod terminal;
mod trust;
mod updates;
mod upstream_selftest;
mod websocket;
mod xet;
mod xet_hostile;
mod xet_setup;
